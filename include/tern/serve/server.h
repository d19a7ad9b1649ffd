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
  double cache_size_mb = 64;       // shared by the models whose config.ini says cache = true
  std::string model_control_mode;  // none | poll | explicit; empty: poll, or none without polling
  std::string load_model;          // explicit mode: models loaded at startup, comma-separated; *
  std::string admin_token_file;    // the bearer token of the control API
  std::string state_dir;           // rollout state; empty: <repository>/.tern-state for a local one
  int64_t max_inflight = 4096;     // requests queued or running, server-wide; 0 = unbounded
};

void register_serve_options(OptionSet& options, ServeConfig& cfg);
void validate_serve_config(const OptionSet& options, const ServeConfig& cfg);

// Rewrites the flags users know from tritonserver (--model-repository=DIR, --http-port=N,
// --http-address=A, --repository-poll-secs=S, --http-thread-count=N, --model-control-mode=M,
// --load-model=M), in either the "=value" or
// the separate-value form, to tern's --server.* keys; other arguments pass unchanged.
std::vector<std::string> translate_triton_flags(const std::vector<std::string>& args);

// Runs tern-serve until SIGTERM or SIGINT, then drains and returns the exit code.
int run_server(const ServeConfig& cfg);

}  // namespace tern::serve
