# Shared by the launch scripts: install what is missing, build, and set up Open MPI.
# Source it from the repository root.

TERN_PACKAGES=(
  g++ make cmake pkg-config git python3 clang-format
  libopenmpi-dev openmpi-bin
  libhdf5-dev libboost-program-options-dev libboost-dev libopenblas-dev
  libspdlog-dev nlohmann-json3-dev libxxhash-dev libgtest-dev
  libcurl4-openssl-dev libssl-dev libpugixml-dev curl wrk
  python3-venv
  clang-14 libclang-rt-14-dev prometheus prometheus-alertmanager
  iproute2 iputils-ping nftables
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

# The Python side of the tests: a venv at .venv-test with moto (S3 server) and boto3 (an
# independent S3 client), for tests/store/s3_interop.sh, and tritonclient[http] (Triton's own
# client) for tests/e2e/serve.sh, scipy and Evidently (drift references) for tests/monitoring.
# Exports TERN_TEST_PYTHON.
setup_python_test_env() {
  local venv=.venv-test
  # Debian's python3 makes a venv without pip when python3-venv is missing: start over then.
  if [ ! -x "$venv/bin/pip" ]; then
    echo "== creating $venv (moto, boto3)"
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c 'import moto.server, boto3, tritonclient.http, numpy, h5py, scipy
import evidently.legacy.calculations.stattests.psi' 2>/dev/null; then
    # Evidently (the drift reference of tests/monitoring) imports pandas internals that pandas 3
    # removed.
    "$venv/bin/pip" install -q 'moto[server]>=5,<6' boto3 'tritonclient[http]' numpy h5py scipy \
      'pandas<3' 'evidently>=0.7,<0.8'
  fi
  export TERN_TEST_PYTHON=$PWD/$venv/bin/python
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
