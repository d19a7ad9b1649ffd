// libFuzzer target for the infer request parser, JSON and binary (tests/serve/fuzz.sh builds
// and runs it with clang, ASan and UBSan). The first byte picks the framing:
//   bit 0 clear: the rest is the body, with no Inference-Header-Content-Length (JSON only);
//   bit 0 set:   the next two bytes (little endian) are the header length, then the body;
//                bit 1 set keeps that length within the body (a JSON head plus binary data),
//                bit 1 clear passes it as is (it may exceed the body).
//   bit 2 set:   the model is a language model (INT32 token ids, rows of 1 to 4 of 5 ids).
// The parser must either return a request consistent with the schema or throw HttpError (400);
// any other exception, a crash or a sanitizer report is a finding. A parsed request is encoded
// back into a response, JSON and binary, so the classification path runs too.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "tern/serve/protocol.h"

namespace {

const tern::serve::ModelSchema& schema() {
  static const tern::serve::ModelSchema s = [] {
    tern::serve::ModelSchema m;
    m.input_name = "input";
    m.input_shape = {4};
    m.output_name = "logits";
    m.output_features = 3;
    m.labels = {"class0", "class1", "class2"};
    m.max_batch_size = 8;
    return m;
  }();
  return s;
}

const tern::serve::ModelSchema& token_schema() {
  static const tern::serve::ModelSchema s = [] {
    tern::serve::ModelSchema m = schema();
    m.input_datatype = "INT32";
    m.vocab = 5;
    m.min_tokens = 1;
    m.output_features = 5;
    m.labels = {"a", "b", "c", "d", "e"};
    return m;
  }();
  return s;
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::optional<size_t> header_length;
  if (mode & 1) {
    if (rest.size() < 2) return 0;
    size_t n =
        static_cast<uint8_t>(rest[0]) | (static_cast<size_t>(static_cast<uint8_t>(rest[1])) << 8);
    rest.remove_prefix(2);
    if (mode & 2) n %= rest.size() + 1;
    header_length = n;
  }
  const auto& s = mode & 4 ? token_schema() : schema();
  tern::serve::InferRequest req;
  try {
    req = tern::serve::parse_infer_request(rest, header_length, s);
  } catch (const tern::serve::HttpError& e) {
    check(e.status() == 400);
    return 0;
  }
  // A parsed request fits the schema.
  check(req.rows >= 1 && req.rows <= s.max_batch_size);
  check(req.input.values() == static_cast<size_t>(req.rows * s.input_features()));
  check(s.tokens() ? req.input.features.empty() : req.input.tokens.empty());
  check(!req.outputs.empty());
  if (s.tokens())  // each row: 1 to T ids in [0, vocab), then padding only
    for (int64_t r = 0; r < req.rows; ++r) {
      const int32_t* row = req.input.tokens.data() + r * s.input_features();
      int64_t len = 0;
      for (; len < s.input_features() && row[len] != tern::serve::kTokenPad; ++len)
        check(row[len] >= 0 && row[len] < s.vocab);
      check(len >= 1);
      for (int64_t p = len; p < s.input_features(); ++p) check(row[p] == tern::serve::kTokenPad);
    }

  std::vector<float> output(static_cast<size_t>(req.rows * s.output_features));
  for (size_t i = 0; i < output.size(); ++i)
    output[i] = i < req.input.features.size() ? req.input.features[i] : static_cast<float>(i);
  const auto encoded = tern::serve::encode_infer_response("mlp", 1, req, s, output.data());
  check(!encoded.body.empty());
  if (encoded.header_length) check(*encoded.header_length <= encoded.body.size());
  return 0;
}
