# What a test does when a component it needs is missing. Source it from a test script.
#
# Outside CI a missing component skips the test (exit 77, which CTest reports as "Skipped" with
# the message). Under CI=true, or TERN_TEST_STRICT=1 (launch/test.sh sets it: it installs every
# component first), the same absence is a failure: an install that broke must not turn the only
# test of a component into a silent skip.

# strict_components: true when a missing component must fail the test.
strict_components() { [ "${CI:-}" = true ] || [ "${TERN_TEST_STRICT:-0}" = 1 ]; }

# missing_component WHAT: print why and exit 77 (skip) or 1 (strict).
missing_component() {
  if strict_components; then
    echo "FAIL: $* (a missing component is a failure under CI=true / TERN_TEST_STRICT=1)" >&2
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

# gtest_executed LOG: how many tests a GoogleTest run executed (ran and were not skipped), from
# its output. A filtered run that matches nothing "passes" with 0 tests: callers assert > 0.
gtest_executed() {
  local ran skipped
  ran=$(sed -n 's/^\[==========\] \([0-9]*\) tests\{0,1\} from .* ran\..*/\1/p' "$1" | tail -1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$1" | tail -1)
  echo $((${ran:-0} - ${skipped:-0}))
}
