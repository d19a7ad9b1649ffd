#pragma once
// Progressive delivery of a model's new version (Flagger's canary analysis, without a mesh):
// the newest version of a model with [rollout] enabled takes step_weight percent of the traffic
// that names no version, and each interval its requests of that interval are checked (success
// rate, p99 latency, live accuracy, agreement with the primary). Passing checks move it up by
// step_weight to max_weight, then it is promoted; `threshold` failed checks roll it back to
// weight 0. Each decision is a JSON line in the log and in <state_dir>/rollout.jsonl, and the
// state of every rollout is kept in <state_dir>/<model>.rollout.json, so a restarted server
// carries on where it stood. A version can also be promoted by hand (the control API).
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/base/clock.h"
#include "tern/base/worker.h"
#include "tern/serve/metrics.h"
#include "tern/serve/repository.h"
#include "tern/serve/shadow.h"

namespace tern::serve {

// The weights a model's requests are routed by: (version, percent).
using Weights = std::vector<std::pair<int64_t, double>>;

struct RolloutState {
  enum class Phase { idle = 0, progressing = 1, promoted = 2, failed = 3 };
  Phase phase = Phase::idle;
  int64_t primary = 0;  // the version serving what the canary does not take; 0: none yet
  int64_t canary = 0;   // 0: none
  double weight = 0;    // the canary's percent
  int64_t failed_checks = 0;
  std::vector<int64_t> rolled_back;  // versions that failed: never canaried again
  bool manual = false;               // the primary was set through the control API
  nlohmann::json to_json() const;
  static RolloutState from_json(const nlohmann::json& j);  // InputError if malformed
};
const char* phase_name(RolloutState::Phase phase);

class RolloutController {
 public:
  // Live accuracy of a model version from its feedback, if enough rows were labelled.
  using AccuracyFn = std::function<std::optional<double>(const std::string&, int64_t)>;
  // state_dir: where states and decisions persist; empty: kept in memory only.
  RolloutController(std::string state_dir, StatsRegistry& stats, ShadowRegistry& shadows,
                    AccuracyFn accuracy);
  ~RolloutController();

  // Advances every rollout by what happened since the last call (checks fall due once per
  // interval). Called each `tick_seconds` by start(); tests call it with their own clock.
  void tick(const Snapshot& snapshot, Clock::time_point now = Clock::now());
  void start(std::function<std::shared_ptr<const Snapshot>()> snapshot, double tick_seconds);
  void stop();

  // The weights for a model's requests; empty: no rollout, use the model's own traffic. The
  // first call for a model reads its saved state (and, with a rollout, takes its first step),
  // so a restarted server routes by the saved weights from its first request on.
  Weights weights(const ModelState& model);
  // The version a progressing rollout mirrors the primary's requests to (rollout.mirror); 0:
  // none.
  int64_t mirror_target(const std::string& model) const;
  // Makes `version` the primary by hand (ending any canary); InputError if it is not loaded.
  RolloutState promote(const ModelState& model, int64_t version);
  std::optional<RolloutState> state(const std::string& model) const;
  // The tern_rollout_* series.
  void render(std::string& out) const;

 private:
  struct Track {
    RolloutState state;
    bool loaded = false;  // state read from disk
    Clock::time_point interval_start{};
    uint64_t base_success = 0, base_fail = 0;
    Histogram::Counts base_latency{};
    ShadowStats::Totals base_agreement{};
    bool waiting = false;  // the last interval had too few requests
  };
  void step(const ModelState& model, Track& track, Clock::time_point now);  // mu_ held
  void begin_interval(const ModelState& model, Track& track, Clock::time_point now);
  void decide(const std::string& model, Track& track, const std::string& decision,
              nlohmann::json detail);          // logs, persists
  Track& track_for(const std::string& model);  // mu_ held; reads the state file once
  void persist(const std::string& model, const RolloutState& state) const;

  const std::string state_dir_;
  StatsRegistry& stats_;
  ShadowRegistry& shadows_;
  AccuracyFn accuracy_;
  mutable std::mutex mu_;
  std::map<std::string, Track> tracks_;
  BackgroundWorker ticker_;
};

}  // namespace tern::serve
