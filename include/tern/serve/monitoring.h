#pragma once
// How a served model is watched: per version its input checks and live drift, per model the
// feedback join (live accuracy) and the request log; and their Prometheus series.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tern/io/dataset.h"
#include "tern/io/profile.h"
#include "tern/serve/drift_window.h"
#include "tern/serve/feedback.h"
#include "tern/serve/input_checks.h"
#include "tern/serve/model_options.h"
#include "tern/serve/protocol.h"
#include "tern/serve/request_log.h"

namespace tern::serve {

// What an export knows of its training data (empty parts for older exports).
struct ModelReference {
  FeatureStats feature_stats;  // min/max per feature: the input range checks
  DataProfile inputs;          // reference bins of the training inputs
  DataProfile predictions;     // of the outputs on the validation split
  bool classification = true;
  int64_t weight_bytes = 0;  // of one copy of the weights
};

// One version's watch. Built with the version, dropped with it.
class VersionMonitor {
 public:
  VersionMonitor(const std::string& model, int64_t version, const ModelReference& reference,
                 const MonitoringOptions& options, const ModelSchema& schema, int64_t instances);

  InputChecks& checks() { return checks_; }
  const InputChecks& checks() const { return checks_; }
  const DriftWindow* drift() const { return drift_.get(); }
  bool classification() const { return classification_; }
  int64_t memory_bytes() const { return memory_bytes_; }
  const MonitoringOptions& options() const { return options_; }
  // Names the model-wide watch these options make (ModelWatches::get).
  const std::string& watch_key() const { return watch_key_; }
  // What the drift window and the feedback join keep of a row's answer: its predicted class
  // (classification) or its outputs.
  std::vector<float> predictions(const float* output, int64_t rows, int64_t width) const;
  // After the answer went out: the rows into the drift window.
  void observe(const InputRows& input, int64_t rows, int64_t features,
               const std::vector<float>& predictions);

 private:
  InputChecks checks_;
  std::unique_ptr<DriftWindow> drift_;
  bool classification_;
  int64_t memory_bytes_;
  MonitoringOptions options_;
  std::string watch_key_;
};

// One model's feedback join and request log, kept across its versions (ids outlive a swap);
// remade when the model's monitoring options change.
struct ModelWatch {
  std::string key;  // VersionMonitor::watch_key
  std::unique_ptr<FeedbackJoin> feedback;
  std::shared_ptr<RequestLog> log;  // null: none configured; shared by models naming one path
  double log_sample = 1.0;
  std::atomic<uint64_t> answered{0};  // requests seen, for the sample
  // Whether this answered request goes into the log: request n is written when
  // floor((n + 1) * sample) > floor(n * sample), an even share without randomness.
  bool sample_request();
};

class ModelWatches {
 public:
  // The watch of `model` for a version's monitor (remade when its watch_key changed); a request
  // log that cannot be opened is logged and left out (serving goes on).
  std::shared_ptr<ModelWatch> get(const std::string& model, const VersionMonitor& monitor);
  std::map<std::string, std::shared_ptr<ModelWatch>> all() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<ModelWatch>> watches_;
  std::map<std::string, std::weak_ptr<RequestLog>> logs_;  // by absolute path
};

// A loaded version as the monitoring series see it.
struct MonitoredVersion {
  std::string model;
  int64_t version;
  std::shared_ptr<const VersionMonitor> monitor;
};

// The monitoring series (docs/serving.md lists each): drift, input checks, live accuracy,
// feedback, readiness and memory per version.
void render_monitoring(std::string& out, const std::vector<MonitoredVersion>& versions,
                       const std::map<std::string, int64_t>& ready_versions,
                       const ModelWatches& watches);

}  // namespace tern::serve
