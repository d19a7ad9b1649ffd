#include "tern/serve/input_checks.h"

#include <cmath>
#include <cstdio>

#include "tern/serve/protocol.h"

namespace tern::serve {

InputChecks::InputChecks(const FeatureStats& stats, std::vector<std::string> names,
                         std::string policy, double margin)
    : names_(std::move(names)), policy_(std::move(policy)) {
  const size_t n = std::min(stats.min.size(), stats.max.size());
  for (size_t f = 0; f < n; ++f) {
    const double width = stats.max[f] - stats.min[f];
    low_.push_back(static_cast<float>(stats.min[f] - margin * width));
    high_.push_back(static_cast<float>(stats.max[f] + margin * width));
    min_.push_back(stats.min[f]);
    max_.push_back(stats.max[f]);
  }
  names_.resize(n);
  for (size_t f = 0; f < n; ++f)
    if (names_[f].empty()) {
      char name[32];
      std::snprintf(name, sizeof name, "f%zu", f);
      names_[f] = name;
    }
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(n);
}

void InputChecks::check(const float* x, int64_t rows, int64_t features,
                        const std::string& input_name) {
  if (!active() || static_cast<size_t>(features) != low_.size()) return;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < features; ++f) {
      const float v = x[r * features + f];
      if (v >= low_[f] && v <= high_[f]) continue;
      if (rejects()) {
        char text[160];
        std::snprintf(text, sizeof text, "value %g is outside the training range [%g, %g]", v,
                      min_[f], max_[f]);
        counts_[f].fetch_add(1, std::memory_order_relaxed);
        throw InputValueError("out_of_range", "input '" + input_name + "' row " +
                                                  std::to_string(r) + ", feature " +
                                                  std::to_string(f) + " ('" + names_[f] +
                                                  "'): " + text + " (input_checks.range = reject)");
      }
      counts_[f].fetch_add(1, std::memory_order_relaxed);
    }
}

}  // namespace tern::serve
