#pragma once
// The request log: a sample of the requests a model answered (inputs, outputs, version, id) and
// the feedback it was given, as JSON lines rotated by size: the live data retraining reads back
// (`tern-data import-log`).
#include <cstdint>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/serve/input_rows.h"

namespace tern::serve {

struct RequestLogOptions {
  std::string path;
  int64_t max_bytes = 64 << 20;  // then PATH becomes PATH.1 (PATH.1 PATH.2, ...)
  int64_t keep = 5;              // rotated files kept
};

class RequestLog {
 public:
  // Opens (appends to) the file; std::runtime_error naming it when it cannot.
  explicit RequestLog(RequestLogOptions options);
  // One answered request:
  // {"time": unix seconds, "model", "version", "id"?, "input": [[...]], "output": [[...]]}.
  void write_request(const std::string& model, int64_t version,
                     const std::optional<std::string>& id, int64_t rows, const InputRows& input,
                     int64_t input_width, const float* output, int64_t output_width);
  // One joined feedback item: {"time", "model", "feedback": {"id", "values": [...]}}, the values
  // as the join read them (class indices, or targets row after row).
  void write_feedback(const std::string& model, const std::string& id,
                      const std::vector<double>& values);
  const std::string& path() const { return options_.path; }

 private:
  void append(const std::string& line);  // mu_ held
  void rotate();                         // mu_ held

  const RequestLogOptions options_;
  std::mutex mu_;
  std::ofstream out_;
  int64_t bytes_ = 0;
  bool failing_ = false;  // a write failed: warned once, retried with every line
};

}  // namespace tern::serve
