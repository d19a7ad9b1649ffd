#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tern/compute/tensor.h"
#include "tern/serve/input_rows.h"

// The Open Inference Protocol (KServe v2, Triton's HTTP/REST protocol) for one-input,
// one-output models (FP32 features, or INT32 token ids for language models): the infer
// request, with JSON tensors and the binary tensor data extension, and the infer response.
// Pure functions of bytes, so a fuzzer can call them.
namespace tern::serve {

// An error with the HTTP status it becomes; the message goes out as {"error": message}.
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// A 400 for a value of an input that the model cannot take; reason (non_finite,
// not_representable, out_of_range) labels the count in the metrics.
class InputValueError : public HttpError {
 public:
  InputValueError(std::string reason, const std::string& message)
      : HttpError(400, message), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

// What a model version accepts and produces, as the protocol sees it.
struct ModelSchema {
  std::string input_name = "input";
  Shape input_shape;  // of one row; the protocol's shape is [-1, input_shape...]
  std::string output_name = "output";
  int64_t output_features = 0;
  std::vector<std::string> labels;  // class names for the classification extension; may be empty
  int64_t max_batch_size = 0;       // rows per request at most
  // Token models (language models): input_datatype "INT32", input_shape [T] (the context, i.e.
  // the block size). A request is [B, L] token ids in [0, vocab) with min_tokens <= L <= T; each
  // row reaches the model right-padded to T with kTokenPad.
  std::string input_datatype = "FP32";
  int64_t vocab = 0;
  int64_t min_tokens = 0;
  bool tokens() const { return input_datatype == "INT32"; }
  int64_t input_features() const { return shape_numel(input_shape); }
  std::vector<std::string> feature_names;  // of the training data, for messages; may be empty
};

// One output the client asked for.
struct RequestedOutput {
  std::string name;
  bool binary = false;
  // Triton's classification extension: k > 0 returns the top k classes as BYTES
  // "score:index[:label]" instead of the raw values.
  int64_t classification = 0;
};

struct InferRequest {
  std::optional<std::string> id;  // echoed in the response
  int64_t rows = 0;
  std::optional<uint64_t> timeout_us;  // parameters.timeout: the request's deadline
  int64_t priority = 0;                // parameters.priority: 1 highest; 0 the model's default
  // Converted to FP32 (feature models) or checked INT32 token ids, padded with kTokenPad.
  InputRows input;
  // Never empty after parsing: without "outputs" every output is returned.
  std::vector<RequestedOutput> outputs;
};

// Parses an infer request for `schema`. header_length is the Inference-Header-Content-Length
// header: the JSON is the first header_length bytes and the binary tensor data follows it.
// Throws HttpError (400) naming the input or field and what was wrong; never anything else.
// Feature values must be finite and within FP32's range (InputValueError naming row and feature).
// Token models take every numeric datatype whose values are whole numbers: INT32 as declared,
// the other integer types, and FP32/FP64 holding integers (as tern converts any numeric type
// for feature models; a value that is no whole number is refused, never rounded).
InferRequest parse_infer_request(std::string_view body, std::optional<size_t> header_length,
                                 const ModelSchema& schema);

// The value of an Inference-Header-Content-Length header; HttpError (400) if it is not a number.
size_t parse_header_length(std::string_view value);

struct EncodedResponse {
  std::string body;
  // Set when binary output data follows the JSON: its length, for the
  // Inference-Header-Content-Length response header.
  std::optional<size_t> header_length;
};

// The response to `request`, from output[rows x schema.output_features].
EncodedResponse encode_infer_response(const std::string& model_name, int64_t version,
                                      const InferRequest& request, const ModelSchema& schema,
                                      const float* output);

// {"error": message}, with the message escaped.
std::string error_body(std::string_view message);

// The shortest decimal text that reads back as the same float; "null" for NaN and infinities,
// which JSON cannot carry (binary outputs keep them).
void append_float(std::string& out, float v);

}  // namespace tern::serve
