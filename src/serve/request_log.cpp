#include "tern/serve/request_log.h"

#include <chrono>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "tern/serve/protocol.h"

namespace tern::serve {
namespace {

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void append_rows(std::string& out, const float* v, int64_t rows, int64_t width) {
  out += '[';
  for (int64_t r = 0; r < rows; ++r) {
    out += r ? ",[" : "[";
    for (int64_t k = 0; k < width; ++k) {
      if (k) out += ',';
      append_float(out, v[r * width + k]);
    }
    out += ']';
  }
  out += ']';
}

}  // namespace

RequestLog::RequestLog(RequestLogOptions options) : options_(std::move(options)) {
  std::error_code ec;
  const auto parent = std::filesystem::path(options_.path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  out_.open(options_.path, std::ios::app);
  if (!out_) throw std::runtime_error("request log '" + options_.path + "' cannot be opened");
  bytes_ = static_cast<int64_t>(std::filesystem::file_size(options_.path, ec));
  if (ec) bytes_ = 0;
}

void RequestLog::write_request(const std::string& model, int64_t version,
                               const std::optional<std::string>& id, int64_t rows,
                               const InputRows& input, int64_t input_width, const float* output,
                               int64_t output_width) {
  nlohmann::json head = {{"time", unix_seconds()}, {"model", model}, {"version", version}};
  if (id) head["id"] = *id;
  std::string line = head.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.pop_back();  // the closing brace: the tensors follow
  line += ",\"input\":";
  if (input.tokens.empty()) {
    append_rows(line, input.features.data(), rows, input_width);
  } else {
    line += '[';
    for (int64_t r = 0; r < rows; ++r) {
      line += r ? ",[" : "[";
      for (int64_t k = 0; k < input_width && input.tokens[r * input_width + k] != kTokenPad; ++k) {
        if (k) line += ',';
        line += std::to_string(input.tokens[r * input_width + k]);
      }
      line += ']';
    }
    line += ']';
  }
  line += ",\"output\":";
  append_rows(line, output, rows, output_width);
  line += "}\n";
  std::lock_guard lock(mu_);
  append(line);
}

void RequestLog::write_feedback(const std::string& model, const std::string& id,
                                const std::vector<double>& values) {
  const nlohmann::json j = {
      {"time", unix_seconds()}, {"model", model}, {"feedback", {{"id", id}, {"values", values}}}};
  const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard lock(mu_);
  append(line);
}

void RequestLog::append(const std::string& line) {
  if (bytes_ > 0 && bytes_ + static_cast<int64_t>(line.size()) > options_.max_bytes) rotate();
  if (!out_.is_open()) out_.open(options_.path, std::ios::app);
  out_ << line;
  out_.flush();
  if (!out_) {
    if (!failing_)
      spdlog::warn("request log '{}': write failed; lines are dropped until a write works",
                   options_.path);
    failing_ = true;
    out_.close();
    out_.clear();
    return;
  }
  if (failing_) spdlog::info("request log '{}': writing again", options_.path);
  failing_ = false;
  bytes_ += static_cast<int64_t>(line.size());
}

void RequestLog::rotate() {
  out_.close();
  std::error_code ec;
  const std::string& p = options_.path;
  std::filesystem::remove(p + "." + std::to_string(options_.keep), ec);
  for (int64_t i = options_.keep - 1; i >= 1; --i)
    std::filesystem::rename(p + "." + std::to_string(i), p + "." + std::to_string(i + 1), ec);
  std::filesystem::rename(p, p + ".1", ec);
  if (ec) {
    // Not rotated: keep appending to the file rather than truncating it.
    spdlog::warn("request log '{}': cannot rotate ({}); tried again after another max_bytes", p,
                 ec.message());
    out_.open(p, std::ios::app);
    bytes_ = 0;
    return;
  }
  out_.open(p, std::ios::trunc);
  bytes_ = 0;
}

}  // namespace tern::serve
