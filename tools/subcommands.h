#pragma once
// The front of the tools that take a subcommand (tern-data, tern-ckpt): usage, --help,
// --version, and one mapping of errors to exit codes.
#include <boost/program_options/errors.hpp>

#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>
#include <string>

#include "tern/error.h"
#include "tern/version.h"

namespace tern {

// dispatch(cmd) runs the subcommand and returns its exit code, or nullopt for an unknown one.
// Bad input (an InputError or a bad option) exits 2, any other error 1.
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
  try {
    if (auto rc = dispatch(cmd)) return *rc;
    std::fprintf(stderr, "%s: unknown command '%s'\n%s", tool, cmd.c_str(), usage);
    return kExitUsage;
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "%s %s: error: %s\n", tool, cmd.c_str(), e.what());
    return kExitUsage;
  } catch (const InputError& e) {
    std::fprintf(stderr, "%s %s: error: %s\n", tool, cmd.c_str(), e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s %s: error: %s\n", tool, cmd.c_str(), e.what());
    return kExitError;
  }
}

}  // namespace tern
