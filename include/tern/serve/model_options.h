#pragma once
// A model's config.ini in the repository: its version policy, batching, instances, traffic split,
// cache, and how it is watched (input checks, drift, feedback, the request log).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/io/profile.h"

namespace tern::serve {

struct VersionPolicy {
  enum class Kind { latest, all, specific };
  Kind kind = Kind::latest;
  int64_t latest = 1;             // latest:N
  std::vector<int64_t> versions;  // specific:1,3
};

// How a model is watched in production (the sections [input_checks], [drift], [feedback] and
// [request_log] of its config.ini).
struct MonitoringOptions {
  // Values outside the training range widened by range_margin times its width on each side:
  // reject (400) | flag (served, counted per feature) | off.
  std::string range_policy = "flag";
  double range_margin = 0.1;
  bool drift = true;
  int64_t drift_window_rows = 1000;  // the window: the last rows (when window_seconds is 0)
  double drift_window_seconds = 0;   // or the rows of the last seconds
  int64_t drift_min_rows = 100;      // fewer rows in the window: nothing is called drifted
  DriftRule drift_rule;
  int64_t feedback_capacity = 100000;        // predictions kept for feedback, at most
  double feedback_ttl_seconds = 3600;        // feedback later than this is counted late, not joined
  int64_t feedback_window = 1000;            // live accuracy over the last labelled rows
  std::string request_log;                   // a JSON-lines file; empty: no request log
  double request_log_sample = 1.0;           // share of requests logged
  int64_t request_log_max_bytes = 64 << 20;  // then rotated to .1, .2, ...
  int64_t request_log_keep = 5;              // rotated files kept
};

// How a version's failures open its breaker (resilience4j's count-based circuit breaker): over
// the last `window` calls (once at least `min_calls` were made), a failure rate or a slow-call
// rate at or above its threshold opens it; open, it refuses calls for `open_seconds`; then
// half-open, it lets `half_open_calls` trial calls through, and their rates close or reopen it.
struct BreakerOptions {
  bool enabled = false;
  int64_t window = 20;
  int64_t min_calls = 10;
  double failure_rate = 50;     // percent
  double slow_call_ms = 1000;   // a call slower than this is slow
  double slow_call_rate = 100;  // percent
  double open_seconds = 10;
  int64_t half_open_calls = 3;
};

// A challenger that sees a copy of the model's traffic ([shadow]): its answers are compared with
// the primary's and discarded.
struct ShadowOptions {
  std::string model;      // empty: this model
  int64_t version = 0;    // 0: none (or, with another model, the version it would choose)
  double fraction = 1.0;  // share of requests mirrored
  bool active() const { return version > 0 || !model.empty(); }
};

// A progressive canary ([rollout], Flagger's analysis): the newest version starts at
// step_weight percent of the traffic, gains step_weight each interval while its checks pass, and
// is promoted after an interval at max_weight; `threshold` failed checks roll it back to 0.
struct RolloutOptions {
  bool enabled = false;
  double step_weight = 10;  // percent
  double max_weight = 50;   // percent
  double interval_seconds = 60;
  int64_t threshold = 5;         // failed checks before the rollback
  double min_success_rate = 99;  // percent of the canary's requests in an interval
  double max_p99_ms = 500;       // the canary's p99 latency in an interval
  double min_accuracy = 0;       // live accuracy (from feedback); 0: not checked
  double min_agreement = 0;      // same arg-max as the primary (mirror = true); 0: not checked
  int64_t min_requests = 10;     // fewer canary requests in an interval: the step waits
  bool mirror = false;           // mirror the primary's requests to the canary (agreement)
};

// Commands a test (or a chaos exercise) gives a model through a file ([fault] control = PATH):
// lines "fail = P" (share of batches that throw), "sleep_ms = N" (added to each batch),
// "nan = P" (share of batches whose outputs are NaN). Read again when the file changes; "{version}"
// in the path stands for the version number, so each version can have its own file.
struct FaultOptions {
  std::string control;  // empty: no faults
};

// A model's config.ini.
struct ModelOptions {
  VersionPolicy policy;
  int64_t max_batch_size = 64;
  int64_t max_queue_delay_us = 0;
  int64_t max_queue_size = 1024;
  int64_t instances = 0;  // workers per version; 0: the server's [server] workers
  std::vector<std::pair<int64_t, double>> traffic;  // (version, weight); empty: the newest
  bool cache = false;
  MonitoringOptions monitoring;
  double timeout_ms = 0;  // how long a request may take this model; 0: only its own deadline
  // Who answers when this model fails, misses its time or has its breaker open: MODEL[:VERSION]
  // (version 0: the one that model would choose).
  std::string fallback_model;
  int64_t fallback_version = 0;
  // Priority levels of the queue: level 1 is served first; level p may queue while fewer than
  // max_queue_size * (levels - p + 1) / levels requests wait, so the lowest sheds first.
  int64_t priority_levels = 1;
  int64_t default_priority = 0;  // 0: the lowest level
  // A header whose value is hashed onto the traffic weights: one key always sees one version.
  std::string sticky_header = "X-Tern-Route-Key";
  BreakerOptions breaker;
  ShadowOptions shadow;
  RolloutOptions rollout;
  FaultOptions fault;
  int64_t priority_of(int64_t requested) const {
    const int64_t p = requested > 0          ? requested
                      : default_priority > 0 ? default_priority
                                             : priority_levels;
    return p < priority_levels ? p : priority_levels;
  }
};

// Parses config.ini text; InputError naming `where`, the key and the value otherwise.
ModelOptions parse_model_options(const std::string& text, const std::string& where);
// Options from Triton's model configuration as JSON (the `config` of a load request): the keys
// tern knows (max_batch_size, version_policy, dynamic_batching, instance_group, response_cache)
// and every config.ini key as parameters {"KEY": {"string_value": "..."}}; others are refused.
ModelOptions parse_triton_config(const std::string& json_text, const std::string& where);
// The versions the policy serves, of `available` (any order), newest first.
std::vector<int64_t> policy_candidates(const VersionPolicy& policy,
                                       const std::vector<int64_t>& available);
nlohmann::json policy_json(const VersionPolicy& policy);

}  // namespace tern::serve
