#pragma once
// The front door of every tool: one mapping of errors to exit codes (bad input, an InputError
// or a bad option, exits 2; any other error 1), and the usage, --help and --version of the
// tools that take a subcommand (tern-data, tern-ckpt). The rank tools add their prologue in
// rank_tool.h.
#include <boost/program_options/errors.hpp>

#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>
#include <string>

#include "tern/base/error.h"
#include "tern/base/version.h"

namespace tern {

// Runs body and returns its exit code; an error is printed as "<what>: error: <message>".
inline int run_tool(const std::string& what, const std::function<int()>& body) {
  try {
    return body();
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "%s: error: %s\n", what.c_str(), e.what());
    return kExitUsage;
  } catch (const InputError& e) {
    std::fprintf(stderr, "%s: error: %s\n", what.c_str(), e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", what.c_str(), e.what());
    return kExitError;
  }
}

// dispatch(cmd) runs the subcommand and returns its exit code, or nullopt for an unknown one.
inline int run_subcommand(int argc, char** argv, const char* tool, const char* usage,
                          const std::function<std::optional<int>(const std::string&)>& dispatch) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << usage;
    return argc < 2 ? kExitUsage : kExitOk;
  }
  const std::string cmd = argv[1];
  if (cmd == "--version") {
    std::cout << tool << " " << version_string() << "\n";
    return kExitOk;
  }
  return run_tool(std::string(tool) + " " + cmd, [&]() -> int {
    if (auto rc = dispatch(cmd)) return *rc;
    std::fprintf(stderr, "%s: unknown command '%s'\n%s", tool, cmd.c_str(), usage);
    return kExitUsage;
  });
}

}  // namespace tern
