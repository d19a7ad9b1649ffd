// tern-serve: serves exported models over the Open Inference Protocol (KServe v2 / Triton
// HTTP). Parses the config and runs the library's server until SIGTERM or SIGINT.
#include <cstdio>
#include <iostream>

#include "tern/config.h"
#include "tern/error.h"
#include "tern/serve/server.h"
#include "tern/version.h"

int main(int argc, char** argv) {
  using namespace tern;
  serve::ServeConfig cfg;
  OptionSet options("tern-serve");
  serve::register_serve_options(options, cfg);
  try {
    const auto args = serve::translate_triton_flags(std::vector<std::string>(argv, argv + argc));
    std::vector<const char*> args_c;
    for (const auto& a : args) args_c.push_back(a.c_str());
    switch (options.parse(static_cast<int>(args_c.size()), args_c.data())) {
      case OptionSet::Outcome::help:
        std::cout << options.help_text();
        return kExitOk;
      case OptionSet::Outcome::version:
        std::cout << "tern-serve " << version_string() << "\n";
        return kExitOk;
      case OptionSet::Outcome::run:
        break;
    }
    serve::validate_serve_config(options, cfg);
  } catch (const InputError& e) {
    std::fprintf(stderr, "tern-serve: error: %s\n", e.what());
    return kExitUsage;
  }
  try {
    return serve::run_server(cfg);
  } catch (const InputError& e) {
    std::fprintf(stderr, "tern-serve: error: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern-serve: error: %s\n", e.what());
    return kExitError;
  }
}
