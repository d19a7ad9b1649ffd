#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tern/config.h"
#include "tern/serve/cache.h"
#include "tern/serve/http_server.h"
#include "tern/serve/metrics.h"
#include "tern/serve/repository.h"

// tern-serve: its settings, the endpoints of the Open Inference Protocol (KServe v2 / Triton
// HTTP) over the model repository, and the process around them (startup, polling, drain).
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

// The endpoints. Every answer goes through `respond`, errors as {"error": "..."} with their
// status; inference answers come from a batcher's worker and are encoded on `post`'s thread.
class Router {
 public:
  Router(ModelRepository& repository, StatsRegistry& stats, const ServerCounters& counters,
         ResponseCache* cache, std::function<bool()> ready,
         std::function<void(std::function<void()>)> post);
  void handle(HttpRequest&& request, Responder respond);

 private:
  struct InferCall;
  HttpResponse route(HttpRequest& request, Responder& respond, bool& answered);
  void infer(HttpRequest& request, const std::string& model,
             const std::optional<std::string>& version, Responder respond);
  void finish(InferCall& call, JobResult&& result);
  HttpResponse model_metadata(const ModelState& model, const LoadedVersion* version) const;
  HttpResponse model_config(const ModelState& model, const LoadedVersion& version) const;
  HttpResponse model_stats(const std::string& model,
                           const std::optional<std::string>& version) const;
  HttpResponse metrics() const;

  ModelRepository& repository_;
  StatsRegistry& stats_;
  const ServerCounters& counters_;
  ResponseCache* cache_;
  std::function<bool()> ready_;
  std::function<void(std::function<void()>)> post_;
};

// Runs tern-serve until SIGTERM or SIGINT, then drains and returns the exit code.
int run_server(const ServeConfig& cfg);

}  // namespace tern::serve
