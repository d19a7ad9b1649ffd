#pragma once
// Shadow traffic (champion / challenger): a challenger runs on copies of the primary's requests
// after the primary has answered, and its answers are compared with the primary's, then
// dropped. What it is measured on, per (model, challenger model, challenger version).
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "tern/serve/metrics.h"

namespace tern::serve {

struct ShadowStats {
  ShadowStats(std::string model, std::string challenger, int64_t challenger_version)
      : model(std::move(model)),
        challenger(std::move(challenger)),
        challenger_version(challenger_version) {}
  const std::string model, challenger;
  const int64_t challenger_version;

  std::atomic<uint64_t> mirrored{0};  // requests sent to the challenger
  std::atomic<uint64_t> dropped{0};   // not sent: its queue was full (a slow or hung challenger)
  std::atomic<uint64_t> errors{0};    // it failed, or answered non-finite values
  std::atomic<uint64_t> rows_compared{0}, rows_agreed{0};  // same arg-max as the primary
  Histogram latency;  // the challenger's, from the copy's submission to its answer

  // Compares the challenger's rows with the primary's: arg-max per row (classification) and the
  // mean absolute difference of the outputs.
  void compare(const float* primary, const float* challenger_out, int64_t rows, int64_t features);
  double mean_abs_diff() const;  // over every compared row
  struct Totals {
    uint64_t compared = 0, agreed = 0;
  };
  Totals totals() const {
    return {rows_compared.load(std::memory_order_relaxed),
            rows_agreed.load(std::memory_order_relaxed)};
  }

 private:
  mutable std::mutex mu_;
  double abs_diff_sum_ = 0;  // of each row's mean |difference|
};

class ShadowRegistry {
 public:
  std::shared_ptr<ShadowStats> get(const std::string& model, const std::string& challenger,
                                   int64_t version);
  std::shared_ptr<ShadowStats> find(const std::string& model, const std::string& challenger,
                                    int64_t version) const;
  std::vector<std::shared_ptr<ShadowStats>> all() const;
  // The tern_shadow_* series.
  void render(std::string& out) const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int64_t>, std::shared_ptr<ShadowStats>> stats_;
};

}  // namespace tern::serve
