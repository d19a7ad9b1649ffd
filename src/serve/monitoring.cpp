#include "tern/serve/monitoring.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include <spdlog/spdlog.h>

#include "tern/serve/metrics.h"

namespace tern::serve {
namespace {

std::string signature(const MonitoringOptions& o) {
  return std::to_string(o.feedback_capacity) + "/" + prometheus_value(o.feedback_ttl_seconds) +
         "/" + std::to_string(o.feedback_window) + "/" + o.request_log + "/" +
         prometheus_value(o.request_log_sample) + "/" + std::to_string(o.request_log_max_bytes) +
         "/" + std::to_string(o.request_log_keep);
}

std::string version_labels(const std::string& model, int64_t version) {
  return "model=\"" + escape_label(model) + "\",version=\"" + std::to_string(version) + "\"";
}

std::vector<std::string> column_names(const DataProfile& p) {
  std::vector<std::string> out;
  for (const auto& c : p.columns) out.push_back(c.name);
  return out;
}

}  // namespace

VersionMonitor::VersionMonitor(const std::string& model, int64_t version,
                               const ModelReference& reference, const MonitoringOptions& options,
                               const ModelSchema& schema, int64_t instances)
    : checks_(schema.tokens() ? FeatureStats{} : reference.feature_stats,
              column_names(reference.inputs), options.range_policy, options.range_margin),
      classification_(reference.classification),
      memory_bytes_(reference.weight_bytes * instances),
      options_(options),
      watch_key_(signature(options) + (reference.classification ? "/c" : "/r")) {
  if (schema.tokens() || !options.drift) return;
  const bool inputs_fit =
      static_cast<int64_t>(reference.inputs.columns.size()) == schema.input_features();
  if (reference.inputs.empty() || !inputs_fit)
    spdlog::warn(
        "model '{}' version {}: the export carries no reference distribution of its inputs "
        "(exported before tern-model reference profiles): input drift is not measured",
        model, version);
  if (reference.predictions.empty())
    spdlog::warn(
        "model '{}' version {}: the export carries no reference distribution of its "
        "predictions: prediction drift is not measured",
        model, version);
  DriftWindowOptions w;
  w.window_rows = options.drift_window_rows;
  w.window_seconds = options.drift_window_seconds;
  w.min_rows = options.drift_min_rows;
  w.rule = options.drift_rule;
  // A classifier's predictions are one column (the class), a regressor's one per output.
  const size_t prediction_columns =
      classification_ ? 1 : static_cast<size_t>(schema.output_features);
  const bool predictions_fit = reference.predictions.columns.size() == prediction_columns;
  if (!reference.predictions.empty() && !predictions_fit)
    spdlog::warn(
        "model '{}' version {}: the prediction reference has {} column(s), the model "
        "answers {}: prediction drift is not measured",
        model, version, reference.predictions.columns.size(), prediction_columns);
  drift_ =
      std::make_unique<DriftWindow>(inputs_fit ? reference.inputs : DataProfile{},
                                    predictions_fit ? reference.predictions : DataProfile{}, w);
}

std::vector<float> VersionMonitor::predictions(const float* output, int64_t rows,
                                               int64_t width) const {
  std::vector<float> out;
  if (!classification_) return std::vector<float>(output, output + rows * width);
  out.reserve(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = output + r * width;
    out.push_back(static_cast<float>(std::max_element(row, row + width) - row));
  }
  return out;
}

void VersionMonitor::observe(const InputRows& input, int64_t rows, int64_t features,
                             const std::vector<float>& predictions) {
  if (!drift_ || input.features.empty()) return;
  drift_->observe(input.features.data(), rows, features,
                  drift_->has_predictions() ? predictions.data() : nullptr);
}

bool ModelWatch::sample_request() {
  const uint64_t n = answered.fetch_add(1, std::memory_order_relaxed);
  return std::floor(static_cast<double>(n + 1) * log_sample) >
         std::floor(static_cast<double>(n) * log_sample);
}

std::shared_ptr<ModelWatch> ModelWatches::get(const std::string& model,
                                              const VersionMonitor& monitor) {
  std::lock_guard lock(mu_);
  auto& w = watches_[model];
  if (w && w->key == monitor.watch_key()) return w;
  const MonitoringOptions& options = monitor.options();
  const bool classification = monitor.classification();
  auto next = std::make_shared<ModelWatch>();
  next->key = monitor.watch_key();
  next->feedback = std::make_unique<FeedbackJoin>(
      FeedbackOptions{options.feedback_capacity, options.feedback_ttl_seconds,
                      options.feedback_window},
      classification);
  next->log_sample = options.request_log_sample;
  if (!options.request_log.empty()) {
    // One log object per file: two models (or two generations of one model's watch) writing
    // the same path must share its size count and its rotation.
    const std::string path = std::filesystem::absolute(options.request_log).lexically_normal();
    next->log = logs_[path].lock();
    if (!next->log) {
      try {
        next->log = std::make_shared<RequestLog>(RequestLogOptions{
            options.request_log, options.request_log_max_bytes, options.request_log_keep});
        logs_[path] = next->log;
      } catch (const std::exception& e) {
        spdlog::error("model '{}': {}; requests are not logged", model, e.what());
      }
    }
  }
  w = std::move(next);
  return w;
}

std::map<std::string, std::shared_ptr<ModelWatch>> ModelWatches::all() const {
  std::lock_guard lock(mu_);
  return watches_;
}

void render_monitoring(std::string& out, const std::vector<MonitoredVersion>& versions,
                       const std::map<std::string, int64_t>& ready_versions,
                       const ModelWatches& watches) {
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto labels = [](const MonitoredVersion& v) { return version_labels(v.model, v.version); };
  auto line = [&](const char* name, const std::string& l, double v) {
    out += std::string(name) + "{" + l + "} " + prometheus_value(v) + "\n";
  };

  auto scores = [&](const char* name, const std::string& l, const DriftScores& s) {
    line(name, l + ",method=\"psi\"", s.psi);
    line(name, l + ",method=\"jensen_shannon\"", s.jensen_shannon);
    line(name, l + ",method=\"wasserstein\"", s.wasserstein);
  };

  family("tern_model_versions_ready", "gauge",
         "Ready versions of each model found in the repository (0: the model serves nothing)");
  for (const auto& [model, n] : ready_versions)
    line("tern_model_versions_ready", "model=\"" + escape_label(model) + "\"",
         static_cast<double>(n));
  family("tern_model_ready", "gauge", "1 for each loaded version that takes traffic");
  for (const auto& v : versions) line("tern_model_ready", labels(v), 1);
  family("tern_model_memory_bytes", "gauge",
         "Weights held by a version's workers (one copy each), in bytes");
  for (const auto& v : versions)
    line("tern_model_memory_bytes", labels(v), static_cast<double>(v.monitor->memory_bytes()));

  family("tern_input_out_of_range_total", "counter",
         "Feature values outside the training range (widened by input_checks.range_margin), "
         "flagged or rejected");
  for (const auto& v : versions) {
    const InputChecks& c = v.monitor->checks();
    if (!c.active()) continue;
    for (size_t f = 0; f < c.features(); ++f)
      line("tern_input_out_of_range_total",
           labels(v) + ",feature=\"" + escape_label(c.feature_name(f)) + "\"",
           static_cast<double>(c.out_of_range(f)));
  }

  struct Drift {
    const MonitoredVersion* version;
    DriftWindow::Report report;
  };
  std::vector<Drift> drifts;
  for (const auto& v : versions)
    if (const DriftWindow* d = v.monitor->drift()) drifts.push_back({&v, d->report()});
  family("tern_drift_reference_available", "gauge",
         "1 when the export carries the reference distribution (part: inputs, predictions)");
  for (const auto& d : drifts) {
    const DriftWindow& w = *d.version->monitor->drift();
    line("tern_drift_reference_available", labels(*d.version) + ",part=\"inputs\"", w.has_inputs());
    line("tern_drift_reference_available", labels(*d.version) + ",part=\"predictions\"",
         w.has_predictions());
  }
  family("tern_drift_window_rows", "gauge", "Rows in the drift window");
  for (const auto& d : drifts)
    line("tern_drift_window_rows", labels(*d.version), static_cast<double>(d.report.rows));
  family("tern_feature_drift", "gauge",
         "Drift of a feature over the window against the training data, by method (psi, "
         "jensen_shannon, wasserstein in training standard deviations)");
  for (const auto& d : drifts)
    for (const auto& c : d.report.inputs) {
      scores("tern_feature_drift", labels(*d.version) + ",feature=\"" + escape_label(c.name) + "\"",
             c.scores);
    }
  family("tern_feature_drifted", "gauge",
         "1 when a feature's drift exceeds the threshold of the model's drift method");
  for (const auto& d : drifts)
    for (const auto& c : d.report.inputs)
      line("tern_feature_drifted", labels(*d.version) + ",feature=\"" + escape_label(c.name) + "\"",
           c.drifted);
  family("tern_drift_features_share", "gauge", "Share of the features that drifted");
  for (const auto& d : drifts)
    if (d.version->monitor->drift()->has_inputs())
      line("tern_drift_features_share", labels(*d.version), d.report.drifted_share);
  family("tern_dataset_drift", "gauge",
         "1 when at least drift.dataset_share of the features drifted (the data set drifted)");
  for (const auto& d : drifts)
    if (d.version->monitor->drift()->has_inputs())
      line("tern_dataset_drift", labels(*d.version), d.report.dataset_drift);
  family("tern_prediction_drift", "gauge",
         "Drift of the model's predictions over the window against its validation answers");
  for (const auto& d : drifts)
    for (const auto& c : d.report.predictions) {
      scores("tern_prediction_drift",
             labels(*d.version) + ",output=\"" + escape_label(c.name) + "\"", c.scores);
    }

  // The live figures of each model's versions, summed once per scrape.
  struct LiveVersion {
    std::string labels;
    bool classification;
    FeedbackJoin::Live live;
  };
  const auto all = watches.all();
  std::vector<LiveVersion> lives;
  for (const auto& [model, w] : all)
    for (const auto& l : w->feedback->live())
      lives.push_back({version_labels(model, l.version), w->feedback->classification(), l});
  using Figure = double (*)(const FeedbackJoin::Live&);
  // kind: the figures of classifiers (true) or regressors (false), for versions with labelled
  // rows; none: the counts of every version.
  auto per_live = [&](const char* name, const char* type, const char* help,
                      std::optional<bool> kind, Figure value) {
    family(name, type, help);
    for (const auto& v : lives)
      if (!kind || (*kind == v.classification && v.live.rows > 0))
        line(name, v.labels, value(v.live));
  };
  per_live("tern_live_accuracy", "gauge",
           "Accuracy over the last feedback.window labelled rows (classification)", true,
           [](const FeedbackJoin::Live& l) { return l.accuracy; });
  per_live("tern_live_mae", "gauge", "Mean absolute error over the last labelled rows (regression)",
           false, [](const FeedbackJoin::Live& l) { return l.mae; });
  per_live("tern_live_rmse", "gauge", "Root mean squared error over the last labelled rows", false,
           [](const FeedbackJoin::Live& l) { return l.rmse; });
  per_live("tern_feedback_window_rows", "gauge", "Labelled rows the live figures cover",
           std::nullopt, [](const FeedbackJoin::Live& l) { return static_cast<double>(l.rows); });
  per_live("tern_feedback_matched_total", "counter", "Feedback items joined with a prediction",
           std::nullopt,
           [](const FeedbackJoin::Live& l) { return static_cast<double>(l.matched); });
  family("tern_feedback_unmatched_total", "counter",
         "Feedback items whose id names no kept prediction (never seen, evicted, or given twice)");
  for (const auto& [model, w] : all)
    line("tern_feedback_unmatched_total", "model=\"" + escape_label(model) + "\"",
         static_cast<double>(w->feedback->unmatched()));
  family("tern_feedback_late_total", "counter",
         "Feedback items that came after feedback.ttl_seconds: counted, not joined");
  for (const auto& [model, w] : all)
    line("tern_feedback_late_total", "model=\"" + escape_label(model) + "\"",
         static_cast<double>(w->feedback->late()));
}

}  // namespace tern::serve
