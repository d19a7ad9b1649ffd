#pragma once
#include <stdexcept>
#include <string>

namespace tern {

// Exit codes shared by every binary (DESIGN.md section 7).
// kExitPreempted: stopped on request (signal, spot notice) with a checkpoint: requeue, and do not
// count it as a failure. kExitPeerLost: a peer rank died, stopped or was cut off (the watchdog).
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,
  kExitUsage = 2,
  kExitPreempted = 75,
  kExitPeerLost = 76
};

// Bad input from the user: a config key, a command-line value, a data file. The message names
// the culprit (key, file, dataset, row) and the binaries exit with kExitUsage.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace tern
