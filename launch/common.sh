# Shared by the launch scripts: install what is missing, build, and set up Open MPI.
# Source it from the repository root.

TERN_PACKAGES=(
  g++ make cmake pkg-config git python3 clang-format
  libopenmpi-dev openmpi-bin
  libhdf5-dev libboost-program-options-dev libopenblas-dev
  libspdlog-dev nlohmann-json3-dev libxxhash-dev libgtest-dev
)

# Installs the Debian packages of TERN_PACKAGES (plus any given) that are not installed yet.
install_packages() {
  local missing=()
  for pkg in "${TERN_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Configures and builds a CMake preset (release | debug-asan).
build_preset() {
  local preset=$1
  echo "== building ($preset)"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
}

# Open MPI refuses to run as root unless told; containers and CI run as root.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
