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
};

// Parses config.ini text; InputError naming `where`, the key and the value otherwise.
ModelOptions parse_model_options(const std::string& text, const std::string& where);
// The versions the policy serves, of `available` (any order), newest first.
std::vector<int64_t> policy_candidates(const VersionPolicy& policy,
                                       const std::vector<int64_t>& available);
nlohmann::json policy_json(const VersionPolicy& policy);

}  // namespace tern::serve
