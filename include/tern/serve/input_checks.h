#pragma once
// Checks of a request's feature values against the training data: values outside the training
// range (widened by a margin) are refused, flagged or let through, as the model's config says.
// (Values that are not finite or not representable as FP32 are refused while parsing, always.)
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tern/io/dataset.h"

namespace tern::serve {

class InputChecks {
 public:
  // stats: min/max per feature of the training inputs (empty: no range checks); policy: reject |
  // flag | off; margin: the share of each feature's range added on either side.
  InputChecks(const FeatureStats& stats, std::vector<std::string> names, std::string policy,
              double margin);

  bool active() const { return policy_ != "off" && !low_.empty(); }
  bool rejects() const { return policy_ == "reject"; }
  // Counts the values outside the range, per feature. Under `reject`, the first one is an
  // HttpError (400) naming the input, row, feature, value and range, and nothing is counted as
  // served.
  void check(const float* x, int64_t rows, int64_t features, const std::string& input_name);

  size_t features() const { return low_.size(); }
  const std::string& feature_name(size_t f) const { return names_[f]; }
  uint64_t out_of_range(size_t f) const { return counts_[f].load(std::memory_order_relaxed); }

 private:
  std::vector<std::string> names_;
  std::string policy_;
  std::vector<float> low_, high_;
  std::vector<double> min_, max_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
};

}  // namespace tern::serve
