#pragma once
// The front door of the tools that run one process per rank (tern-train, tern-predict): the
// process group first, then the tool's body with one mapping of errors to exit codes.
//   - Until the body calls diverge(), every rank works on the same inputs, so every rank fails
//     with the same error: rank 0 reports it and every rank exits (2 for bad input, 1 otherwise)
//     without tearing the job down.
//   - After diverge() (the ranks work on their own shares, or wait in collectives), an error is
//     one rank's: it is reported with the rank and ends every rank of the job (MPI_Abort).
#include <boost/program_options/errors.hpp>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "tern/base/error.h"
#include "tern/dist/communicator.h"

namespace tern {

class RankTool {
 public:
  RankTool(ProcessGroup& group, std::string name) : group(group), name(std::move(name)) {}
  ProcessGroup& group;
  const std::string name;
  bool root() const { return group.rank() == 0; }
  void diverge() { uniform_ = false; }
  bool uniform() const { return uniform_; }
  // How errors are reported; by default "<tool>: error: <message>" on stderr (tern-train logs
  // them once its logging is set up).
  std::function<void(const std::string&)> report = [this](const std::string& message) {
    std::fprintf(stderr, "%s: error: %s\n", name.c_str(), message.c_str());
  };

 private:
  bool uniform_ = true;
};

inline int run_rank_tool(int* argc, char*** argv, const char* name,
                         const std::function<int(RankTool&)>& body) {
  std::unique_ptr<ProcessGroup> group;
  try {
    group = std::make_unique<ProcessGroup>(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return kExitError;
  }
  RankTool tool(*group, name);
  const auto fail = [&](const std::string& message, int code) {
    if (tool.uniform()) {
      if (tool.root()) tool.report(message);
      return code;
    }
    tool.report("rank " + std::to_string(group->rank()) + ": " + message);
    group->abort(code);
  };
  try {
    return body(tool);
  } catch (const boost::program_options::error& e) {
    return fail(e.what(), kExitUsage);
  } catch (const InputError& e) {
    return fail(e.what(), kExitUsage);
  } catch (const std::exception& e) {
    // Any other error may strike one rank alone while the others wait in a collective.
    tool.diverge();
    return fail(e.what(), kExitError);
  }
}

}  // namespace tern
