#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tern/base/options.h"

// tern-serve: its settings and the process around the router (startup, polling, drain).
namespace tern::serve {

struct ServeConfig {
  std::string model_repository;
  std::string address = "0.0.0.0";
  int64_t http_port = 8000;
  int64_t workers = 2;     // inference workers per model version (config.ini: instances)
  int64_t io_threads = 2;  // threads serving the HTTP connections
  double max_body_mb = 64;
  double repository_poll_secs = 15;  // 0: load once at startup
  double idle_timeout_secs = 60;
  double drain_timeout_secs = 30;
  double store_retry_secs = 30;
  int64_t blas_threads = 1;  // per worker; workers already run in parallel
  std::string log_level = "info";
  double cache_size_mb = 64;  // shared by the models whose config.ini says cache = true
};

void register_serve_options(OptionSet& options, ServeConfig& cfg);
void validate_serve_config(const OptionSet& options, const ServeConfig& cfg);

// Rewrites the flags users know from tritonserver (--model-repository=DIR, --http-port=N,
// --http-address=A, --repository-poll-secs=S, --http-thread-count=N), in either the "=value" or
// the separate-value form, to tern's --server.* keys; other arguments pass unchanged.
std::vector<std::string> translate_triton_flags(const std::vector<std::string>& args);

// Runs tern-serve until SIGTERM or SIGINT, then drains and returns the exit code.
int run_server(const ServeConfig& cfg);

}  // namespace tern::serve
