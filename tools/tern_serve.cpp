// tern-serve: serves exported models over the Open Inference Protocol (KServe v2 / Triton
// HTTP). Parses the config and runs the library's server until SIGTERM or SIGINT.
#include <iostream>

#include "tern/base/options.h"
#include "tern/base/version.h"
#include "tern/serve/server.h"
#include "tool_main.h"

int main(int argc, char** argv) {
  using namespace tern;
  return run_tool("tern-serve", [&]() -> int {
    serve::ServeConfig cfg;
    OptionSet options("tern-serve");
    serve::register_serve_options(options, cfg);
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
    return serve::run_server(cfg);
  });
}
