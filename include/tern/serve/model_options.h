#pragma once
// A model's config.ini in the repository: its version policy, batching, instances, traffic split
// and cache.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tern::serve {

struct VersionPolicy {
  enum class Kind { latest, all, specific };
  Kind kind = Kind::latest;
  int64_t latest = 1;             // latest:N
  std::vector<int64_t> versions;  // specific:1,3
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
};

// Parses config.ini text; InputError naming `where`, the key and the value otherwise.
ModelOptions parse_model_options(const std::string& text, const std::string& where);
// The versions the policy serves, of `available` (any order), newest first.
std::vector<int64_t> policy_candidates(const VersionPolicy& policy,
                                       const std::vector<int64_t>& available);
nlohmann::json policy_json(const VersionPolicy& policy);

}  // namespace tern::serve
