#pragma once
// The endpoints of the Open Inference Protocol (KServe v2 / Triton HTTP) over the model
// repository.
#include <functional>
#include <optional>
#include <string>

#include "tern/serve/cache.h"
#include "tern/serve/http_server.h"
#include "tern/serve/metrics.h"
#include "tern/serve/monitoring.h"
#include "tern/serve/repository.h"

namespace tern::serve {

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
  void watch(const InferCall& call, const JobResult& result, ModelWatch& model_watch,
             const std::vector<float>& predicted);
  HttpResponse feedback(HttpRequest& request, const std::string& model);
  HttpResponse drift(const std::string& model, const std::optional<std::string>& version);
  HttpResponse model_metadata(const ModelState& model, const LoadedVersion* version) const;
  HttpResponse model_config(const ModelState& model, const LoadedVersion& version) const;
  HttpResponse model_stats(const std::string& model,
                           const std::optional<std::string>& version) const;
  HttpResponse metrics() const;

  ModelRepository& repository_;
  StatsRegistry& stats_;
  const ServerCounters& counters_;
  ResponseCache* cache_;
  ModelWatches watches_;  // feedback joins and request logs, by model
  std::function<bool()> ready_;
  std::function<void(std::function<void()>)> post_;
};

}  // namespace tern::serve
