#pragma once
// The endpoints of the Open Inference Protocol (KServe v2 / Triton HTTP) over the model
// repository.
#include <functional>
#include <optional>
#include <string>

#include "tern/serve/admission.h"
#include "tern/serve/cache.h"
#include "tern/serve/deadline_timer.h"
#include "tern/serve/http_server.h"
#include "tern/serve/metrics.h"
#include "tern/serve/monitoring.h"
#include "tern/serve/repository.h"
#include "tern/serve/rollout.h"
#include "tern/serve/shadow.h"

namespace tern::serve {

// How releases are kept safe: who may change the repository, where rollouts keep their state,
// and how much the server takes at once.
struct ReleaseOptions {
  std::string admin_token;            // empty: the control API's changes are refused
  std::string state_dir;              // rollout states and decisions; empty: in memory only
  int64_t max_inflight = 0;           // requests queued or running, server-wide; 0: unbounded
  double rollout_tick_seconds = 0.2;  // 0: tick() by hand (tests)
};

// The endpoints. Every answer goes through `respond`, errors as {"error": "..."} with their
// status; inference answers come from a batcher's worker and are encoded on `post`'s thread.
class Router {
 public:
  Router(ModelRepository& repository, StatsRegistry& stats, const ServerCounters& counters,
         ResponseCache* cache, std::function<bool()> ready,
         std::function<void(std::function<void()>)> post, ReleaseOptions release = {});
  ~Router();
  void handle(HttpRequest&& request, Responder respond);
  RolloutController& rollouts() { return rollouts_; }
  const AdmissionGate& admission() const { return admission_; }

 private:
  struct InferCall;
  struct Target;
  HttpResponse control(HttpRequest& request, const std::vector<std::string>& seg);
  void authorize(const HttpRequest& request) const;
  void submit_primary(const std::shared_ptr<InferCall>& call);
  void on_deadline(const std::shared_ptr<InferCall>& call);
  // The primary failed (why, and the status it would answer): the fallback answers, or the
  // error goes out.
  void fail_over(const std::shared_ptr<InferCall>& call, const char* reason, int status,
                 const std::string& message);
  void finish_fallback(const std::shared_ptr<InferCall>& call, JobResult&& result);
  void mirror(const InferCall& call, const JobResult& result);
  HttpResponse route(HttpRequest& request, Responder& respond, bool& answered);
  void infer(HttpRequest& request, const std::string& model,
             const std::optional<std::string>& version, Responder respond);
  void finish(const std::shared_ptr<InferCall>& call, JobResult&& result);
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
  const ReleaseOptions release_;
  ShadowRegistry shadows_;
  RolloutController rollouts_;
  AdmissionGate admission_;
  DeadlineTimer deadlines_;
};

}  // namespace tern::serve
