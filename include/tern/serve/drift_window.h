#pragma once
// Live drift of one model version: the inputs and predictions of a rolling window, in the bins of
// the export's reference, scored with the same code as `tern-data validate` (io/profile.h).
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/base/clock.h"
#include "tern/io/profile.h"

namespace tern::serve {

struct DriftWindowOptions {
  int64_t window_rows = 1000;  // the last rows, when window_seconds is 0
  double window_seconds = 0;   // else the rows of the last seconds
  int64_t slices = 10;         // the window moves a slice at a time
  int64_t min_rows = 100;      // fewer rows in the window: scores shown, nothing called drifted
  DriftRule rule;
};

// The window is a ring of slices, each holding its rows' counts per reference bin: memory is
// fixed (slices x columns x bins), a row costs O(columns) (a bin search each), and the scores are
// computed only when asked (a scrape), never on a request's path. A count window holds its
// slices of ceil(window_rows / slices) rows each, the newest one filling: from (slices - 1) to
// slices of them; a time window the slices that started within window_seconds.
class DriftWindow {
 public:
  DriftWindow(DataProfile inputs, DataProfile predictions, DriftWindowOptions options);

  bool has_inputs() const { return !inputs_.empty(); }
  bool has_predictions() const { return !predictions_.empty(); }

  // rows x input_features values; predictions: rows x prediction columns (the predicted class of
  // a classifier, the outputs of a regressor), or null.
  void observe(const float* x, int64_t rows, int64_t features, const float* predictions,
               Clock::time_point now = Clock::now());

  struct Column {
    std::string name;
    std::string method;  // the one that decides
    double score = 0;
    bool drifted = false;
    DriftScores scores;
    BinnedColumn current;
  };
  struct Report {
    int64_t rows = 0;  // in the window
    std::vector<Column> inputs, predictions;
    double drifted_share = 0;
    bool dataset_drift = false;
  };
  Report report(Clock::time_point now = Clock::now()) const;
  const DataProfile& reference_inputs() const { return inputs_; }
  const DataProfile& reference_predictions() const { return predictions_; }
  const DriftWindowOptions& options() const { return options_; }

 private:
  struct Slice {
    Clock::time_point start;
    int64_t rows = 0;
    std::vector<BinnedColumn> inputs, predictions;
  };
  static void clear(Slice& s, Clock::time_point start);
  void advance(Clock::time_point now);  // mu_ held

  const DataProfile inputs_, predictions_;
  const DriftWindowOptions options_;
  int64_t slice_rows_ = 0;
  Clock::duration slice_time_{};
  mutable std::mutex mu_;
  std::vector<Slice> ring_;
  size_t current_ = 0;
};

// The report as JSON (GET /v2/models/{m}/versions/{v}/drift): per column its scores, the deciding
// method, and the window's counts per bin, so any client can recompute the scores.
nlohmann::json drift_report_json(const DriftWindow& window, const DriftWindow::Report& report);

}  // namespace tern::serve
