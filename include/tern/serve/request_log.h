#pragma once
// The request log: a sample of the requests a model answered (inputs, outputs, version, id) and
// the feedback it was given, as JSON lines rotated by size: the live data retraining reads back
// (`tern-data import-log`).
#include <cstdint>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tern/serve/input_rows.h"

namespace tern::serve {

struct RequestLogOptions {
  std::string path;
  double sample = 1.0;           // share of requests written
  int64_t max_bytes = 64 << 20;  // then PATH becomes PATH.1 (PATH.1 PATH.2, ...)
  int64_t keep = 5;              // rotated files kept
};

class RequestLog {
 public:
  // Opens (appends to) the file; std::runtime_error naming it when it cannot.
  explicit RequestLog(RequestLogOptions options);
  // One answered request, when the sample takes it:
  // {"time": unix seconds, "model", "version", "id"?, "input": [[...]], "output": [[...]]}.
  void write_request(const std::string& model, int64_t version,
                     const std::optional<std::string>& id, int64_t rows, const InputRows& input,
                     int64_t input_width, const float* output, int64_t output_width);
  // One feedback item (always written: ground truth is rare): {"time", "model", "feedback": item}.
  void write_feedback(const std::string& model, const nlohmann::json& item);
  const std::string& path() const { return options_.path; }

 private:
  void append(const std::string& line);  // mu_ held
  void rotate();                         // mu_ held

  const RequestLogOptions options_;
  std::mutex mu_;
  std::ofstream out_;
  int64_t bytes_ = 0;
  double credit_ = 0;  // sampling: a request is written each time this reaches 1
};

}  // namespace tern::serve
