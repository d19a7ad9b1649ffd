#include "tern/serve/drift_window.h"

#include <algorithm>

namespace tern::serve {
namespace {

std::vector<BinnedColumn> empty_bins(const DataProfile& p) {
  std::vector<BinnedColumn> out;
  for (const ColumnProfile& c : p.columns) out.push_back(BinnedColumn::empty_for(c));
  return out;
}

std::vector<DriftWindow::Column> score(const DataProfile& ref,
                                       const std::vector<BinnedColumn>& window,
                                       const DriftRule& rule, bool enough_rows) {
  std::vector<DriftWindow::Column> out;
  for (size_t c = 0; c < ref.columns.size(); ++c) {
    DriftWindow::Column col;
    col.name = ref.columns[c].name;
    col.current = window[c];
    col.scores = drift_scores(ref.columns[c], window[c]);
    col.method = rule.method_for(ref.columns[c]);
    col.score = rule.score(col.method, col.scores);
    col.drifted = enough_rows && col.score >= rule.threshold(col.method);
    out.push_back(std::move(col));
  }
  return out;
}

}  // namespace

DriftWindow::DriftWindow(DataProfile inputs, DataProfile predictions, DriftWindowOptions options)
    : inputs_(std::move(inputs)), predictions_(std::move(predictions)), options_(options) {
  const int64_t slices = std::max<int64_t>(options_.slices, 1);
  slice_rows_ = std::max<int64_t>(1, (options_.window_rows + slices - 1) / slices);
  slice_time_ = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.window_seconds / static_cast<double>(slices)));
  ring_.resize(static_cast<size_t>(slices));
  const auto now = Clock::now();
  for (Slice& s : ring_) {
    s.start = now;
    s.inputs = empty_bins(inputs_);
    s.predictions = empty_bins(predictions_);
  }
}

// In place: a slice's bins are sized once, so the observe path never allocates.
void DriftWindow::clear(Slice& s, Clock::time_point start) {
  s.start = start;
  s.rows = 0;
  for (BinnedColumn& b : s.inputs) b.clear();
  for (BinnedColumn& b : s.predictions) b.clear();
}

void DriftWindow::advance(Clock::time_point now) {
  if (options_.window_seconds > 0) {
    // As many slices as have passed, but at most the whole ring.
    for (size_t n = 0; n < ring_.size() && now - ring_[current_].start >= slice_time_; ++n) {
      const auto next_start = ring_[current_].start + slice_time_;
      current_ = (current_ + 1) % ring_.size();
      clear(ring_[current_], now - next_start >= slice_time_ ? now : next_start);
    }
    return;
  }
  if (ring_[current_].rows < slice_rows_) return;
  current_ = (current_ + 1) % ring_.size();
  clear(ring_[current_], now);
}

void DriftWindow::observe(const float* x, int64_t rows, int64_t features, const float* predictions,
                          Clock::time_point now) {
  if (inputs_.empty() && predictions_.empty()) return;
  const int64_t in_cols = std::min<int64_t>(features, static_cast<int64_t>(inputs_.columns.size()));
  const int64_t out_cols = static_cast<int64_t>(predictions_.columns.size());
  std::lock_guard lock(mu_);
  for (int64_t r = 0; r < rows; ++r) {
    advance(now);
    Slice& s = ring_[current_];
    for (int64_t c = 0; c < in_cols; ++c) s.inputs[c].add(inputs_.columns[c], x[r * features + c]);
    if (predictions)
      for (int64_t c = 0; c < out_cols; ++c)
        s.predictions[c].add(predictions_.columns[c], predictions[r * out_cols + c]);
    ++s.rows;
  }
}

DriftWindow::Report DriftWindow::report(Clock::time_point now) const {
  std::vector<BinnedColumn> in = empty_bins(inputs_), out = empty_bins(predictions_);
  Report rep;
  {
    std::lock_guard lock(mu_);
    const auto window = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(options_.window_seconds));
    for (const Slice& s : ring_) {
      if (options_.window_seconds > 0 && now - s.start >= window) continue;
      rep.rows += s.rows;
      for (size_t c = 0; c < in.size(); ++c) in[c].merge(s.inputs[c]);
      for (size_t c = 0; c < out.size(); ++c) out[c].merge(s.predictions[c]);
    }
  }
  const bool enough = rep.rows >= options_.min_rows;
  rep.inputs = score(inputs_, in, options_.rule, enough);
  rep.predictions = score(predictions_, out, options_.rule, enough);
  int64_t drifted = 0;
  for (const Column& c : rep.inputs) drifted += c.drifted;
  rep.drifted_share = rep.inputs.empty()
                          ? 0
                          : static_cast<double>(drifted) / static_cast<double>(rep.inputs.size());
  rep.dataset_drift = !rep.inputs.empty() && rep.drifted_share >= options_.rule.dataset_share;
  return rep;
}

nlohmann::json drift_report_json(const DriftWindow& window, const DriftWindow::Report& report) {
  auto columns = [](const DataProfile& ref, const std::vector<DriftWindow::Column>& cols) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t c = 0; c < cols.size(); ++c) {
      const DriftWindow::Column& col = cols[c];
      out.push_back({{"name", col.name},
                     {"kind", ref.columns[c].categorical ? "categorical" : "numeric"},
                     {"method", col.method},
                     {"score", col.score},
                     {"drifted", col.drifted},
                     {"psi", col.scores.psi},
                     {"jensen_shannon", col.scores.jensen_shannon},
                     {"wasserstein", col.scores.wasserstein},
                     {"counts", col.current.counts},
                     {"sums", col.current.sums},
                     {"missing", col.current.missing},
                     {"non_finite", col.current.non_finite}});
    }
    return out;
  };
  nlohmann::json missing = nlohmann::json::array();
  if (!window.has_inputs()) missing.push_back("inputs");
  if (!window.has_predictions()) missing.push_back("predictions");
  return {{"window_rows", report.rows},
          {"drifted_share", report.drifted_share},
          {"dataset_drift", report.dataset_drift},
          {"reference_missing", missing},
          {"inputs", columns(window.reference_inputs(), report.inputs)},
          {"predictions", columns(window.reference_predictions(), report.predictions)}};
}

}  // namespace tern::serve
