// The Open Inference Protocol parser and encoder: JSON tensors (flat and nested), the binary
// tensor extension, and every way a request can be wrong (400 naming the input and the fault).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include <nlohmann/json.hpp>

#include "tern/serve/protocol.h"

namespace tern::serve {
namespace {

using json = nlohmann::json;

ModelSchema schema(Shape input_shape = {4}, int64_t outputs = 3) {
  ModelSchema s;
  s.input_name = "input";
  s.input_shape = std::move(input_shape);
  s.output_name = "logits";
  s.output_features = outputs;
  s.labels = {"cat", "dog", "eel"};
  s.max_batch_size = 8;
  return s;
}

InferRequest parse(const std::string& body, const ModelSchema& s = schema()) {
  return parse_infer_request(body, std::nullopt, s);
}

// The request fails with 400 and a message that contains every one of `words`.
void expect_400(const std::string& body, std::vector<std::string> words,
                std::optional<size_t> header_length = std::nullopt,
                const ModelSchema& s = schema()) {
  try {
    parse_infer_request(body, header_length, s);
    ADD_FAILURE() << "accepted: " << body.substr(0, 200);
  } catch (const HttpError& e) {
    EXPECT_EQ(e.status(), 400);
    for (const auto& w : words)
      EXPECT_NE(std::string(e.what()).find(w), std::string::npos)
          << "message '" << e.what() << "' lacks '" << w << "'";
  }
}

std::string one_input(const std::string& fields) {
  return R"({"inputs":[{"name":"input",)" + fields + "}]}";
}

// A request with its input as binary data: the JSON, then the raw bytes.
template <class T>
std::pair<std::string, size_t> binary_request(const std::vector<T>& values, const char* datatype,
                                              int64_t rows, std::string extra = "") {
  const std::string head = R"({"inputs":[{"name":"input","datatype":")" + std::string(datatype) +
                           R"(","shape":[)" + std::to_string(rows) +
                           R"(,4],"parameters":{"binary_data_size":)" +
                           std::to_string(values.size() * sizeof(T)) + "}}]" + extra + "}";
  std::string body = head;
  body.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return {body, head.size()};
}

TEST(Protocol, FlatJsonData) {
  auto r = parse(R"({"id":"req-7","inputs":[{"name":"input","datatype":"FP32","shape":[2,4],
                    "data":[1,2,3,4,5,6,7,8.5]}]})");
  EXPECT_EQ(r.rows, 2);
  EXPECT_EQ(r.input.features, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8.5}));
  EXPECT_EQ(r.id, "req-7");
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_EQ(r.outputs[0].name, "logits");
  EXPECT_FALSE(r.outputs[0].binary);
}

TEST(Protocol, NestedJsonData) {
  auto r = parse(one_input(R"("datatype":"FP32","shape":[2,4],"data":[[1,2,3,4],[5,6,7,8]])"));
  EXPECT_EQ(r.input.features, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  // A model whose rows are [2, 2]: nested three deep, or flattened to [N, 4].
  auto s = schema({2, 2});
  auto deep = parse(one_input(R"("datatype":"FP32","shape":[1,2,2],"data":[[[1,2],[3,4]]])"), s);
  EXPECT_EQ(deep.input.features, (std::vector<float>{1, 2, 3, 4}));
  auto flat = parse(one_input(R"("datatype":"FP32","shape":[1,4],"data":[1,2,3,4])"), s);
  EXPECT_EQ(flat.input.features, (std::vector<float>{1, 2, 3, 4}));
}

TEST(Protocol, NestedDataMustMatchShape) {
  expect_400(one_input(R"("datatype":"FP32","shape":[2,4],"data":[[1,2,3,4],[5,6,7]])"),
             {"'input'", "3 numbers"});
  expect_400(one_input(R"("datatype":"FP32","shape":[2,4],"data":[[1,2,3,4]])"),
             {"'input'", "1 elements", "says 2"});
  expect_400(one_input(R"("datatype":"FP32","shape":[2,4],"data":[[1,2,3,4],5])"),
             {"'input'", "mixes numbers and arrays"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":[[[1,2,3,4]]])"),
             {"'input'", "nested deeper"});
}

TEST(Protocol, ConvertsOtherNumericTypes) {
  auto i64 = parse(one_input(R"("datatype":"INT64","shape":[1,4],"data":[1,-2,3,40000000000])"));
  EXPECT_EQ(i64.input.features, (std::vector<float>{1, -2, 3, 4e10f}));
  auto f64 = parse(one_input(R"("datatype":"FP64","shape":[1,4],"data":[0.5,1e30,-1,2])"));
  EXPECT_EQ(f64.input.features[0], 0.5f);
  EXPECT_EQ(f64.input.features[1], 1e30f);
  // Beyond FP32's range: refused, never served as infinity.
  expect_400(one_input(R"("datatype":"FP64","shape":[1,4],"data":[0.5,1e300,-1,2])"),
             {"'input'", "row 0, feature 1", "not representable as FP32"});
  auto u8 = parse(one_input(R"("datatype":"UINT8","shape":[1,4],"data":[0,1,254,255])"));
  EXPECT_EQ(u8.input.features, (std::vector<float>{0, 1, 254, 255}));
}

TEST(Protocol, ValuesMustFitTheirDatatype) {
  expect_400(one_input(R"("datatype":"INT8","shape":[1,4],"data":[1,2,3,300])"),
             {"'input'", "element 3", "INT8"});
  expect_400(one_input(R"("datatype":"UINT8","shape":[1,4],"data":[1,2,-3,4])"),
             {"'input'", "element 2", "UINT8"});
  expect_400(one_input(R"("datatype":"INT32","shape":[1,4],"data":[1,2,3.5,4])"),
             {"'input'", "element 2", "INT32"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":[1,true,3,4])"),
             {"'input'", "element 1", "FP32"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":[1,"2",3,4])"),
             {"'input'", "element 1"});
}

TEST(Protocol, WrongDatatype) {
  for (const char* dt : {"BYTES", "BOOL", "FP16", "BF16", "fp32", "FLOAT"})
    expect_400(
        one_input(R"("datatype":")" + std::string(dt) + R"(","shape":[1,4],"data":[1,2,3,4])"),
        {"'input'", "datatype '" + std::string(dt) + "' is not supported"});
  expect_400(one_input(R"("datatype":5,"shape":[1,4],"data":[1,2,3,4])"), {"'input'", "datatype"});
  expect_400(one_input(R"("shape":[1,4],"data":[1,2,3,4])"), {"'input'", "datatype"});
}

TEST(Protocol, UnknownMissingAndDuplicateInputs) {
  expect_400(R"({"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]})",
             {"unknown input 'pixels'", "expects input 'input'"});
  expect_400(R"({"inputs":[]})", {"inputs", "'input'"});
  expect_400(R"({"id":"x"})", {"inputs", "'input'"});
  expect_400(R"({"inputs":{"name":"input"}})", {"inputs"});
  expect_400(R"({"inputs":[{"datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]})", {"name"});
  expect_400(R"({"inputs":[5]})", {"objects"});
  const std::string in = R"({"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]})";
  expect_400(R"({"inputs":[)" + in + "," + in + "]}", {"'input'", "twice"});
}

TEST(Protocol, ShapeErrors) {
  expect_400(one_input(R"("datatype":"FP32","shape":[1,5],"data":[1,2,3,4,5])"),
             {"'input'", "shape [1,5]", "[-1,4]"});
  expect_400(one_input(R"("datatype":"FP32","shape":[4],"data":[1,2,3,4])"),
             {"'input'", "shape [4]"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,1,4],"data":[1,2,3,4])"),
             {"'input'", "shape [1,1,4]"});
  expect_400(one_input(R"("datatype":"FP32","shape":[-1,4],"data":[1,2,3,4])"),
             {"'input'", "non-negative"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1.5,4],"data":[1,2,3,4])"),
             {"'input'", "non-negative"});
  expect_400(one_input(R"("datatype":"FP32","shape":"1,4","data":[1,2,3,4])"),
             {"'input'", "'shape'"});
  expect_400(one_input(R"("datatype":"FP32","data":[1,2,3,4])"), {"'input'", "'shape'"});
  expect_400(one_input(R"("datatype":"FP32","shape":[0,4],"data":[])"), {"'input'", "no rows"});
  expect_400(one_input(R"("datatype":"FP32","shape":[9,4],"data":[])"),
             {"'input'", "9 rows", "max_batch_size 8"});
  // A huge claimed shape is refused before anything is allocated for it.
  auto s = schema();
  s.max_batch_size = 0;
  expect_400(one_input(R"("datatype":"FP32","shape":[1000000000000,4],"data":[1])"),
             {"'input'", "1 values"}, std::nullopt, s);
}

TEST(Protocol, DataErrors) {
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":[1,2,3])"),
             {"'input'", "3 values", "needs 4"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":[1,2,3,4,5])"),
             {"'input'", "5 values"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4])"), {"'input'", "'data'"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":7)"), {"'input'", "'data'"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":[1,2,3,4],
                          "parameters":{"shared_memory_region":"r"})"),
             {"'input'", "shared memory"});
}

TEST(Protocol, BadJson) {
  expect_400("", {"not valid JSON"});
  expect_400("{\"inputs\":[", {"not valid JSON", "column"});
  expect_400("[1,2]", {"JSON object"});
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"data":[1,2,3,4])") + "x",
             {"not valid JSON"});
  expect_400(R"({"id":5,"inputs":[]})", {"'id'"});
  expect_400(R"({"parameters":[],"inputs":[]})", {"'parameters'"});
  expect_400(R"({"parameters":{"binary_data_output":"yes"},"inputs":[]})", {"binary_data_output"});
}

TEST(Protocol, BinaryInput) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8};
  auto [body, head] = binary_request(v, "FP32", 2);
  auto r = parse_infer_request(body, head, schema());
  EXPECT_EQ(r.rows, 2);
  EXPECT_EQ(r.input.features, v);
  const std::vector<double> d = {0.5, 1, 2, 3};
  auto [dbody, dhead] = binary_request(d, "FP64", 1);
  EXPECT_EQ(parse_infer_request(dbody, dhead, schema()).input.features,
            (std::vector<float>{0.5, 1, 2, 3}));
  const std::vector<int32_t> i = {-1, 0, 1, 2};
  auto [ibody, ihead] = binary_request(i, "INT32", 1);
  EXPECT_EQ(parse_infer_request(ibody, ihead, schema()).input.features,
            (std::vector<float>{-1, 0, 1, 2}));
}

TEST(Protocol, BinaryInputErrors) {
  const std::vector<float> v = {1, 2, 3, 4};
  auto [body, head] = binary_request(v, "FP32", 1);
  // The byte count must match the shape and the datatype.
  auto [wrong, wrong_head] = binary_request(v, "FP32", 2);
  expect_400(wrong, {"'input'", "binary_data_size 16", "32 bytes"}, wrong_head);
  auto [fp64, fp64_head] = binary_request(v, "FP64", 1);
  expect_400(fp64, {"'input'", "binary_data_size 16", "FP64"}, fp64_head);
  // Fewer bytes after the JSON than announced, and bytes no input claims.
  expect_400(body.substr(0, body.size() - 1), {"'input'", "exceeds", "15 bytes"}, head);
  expect_400(body + "xy", {"2 bytes", "belong to no input"}, head);
  // binary_data_size without the header, and a header longer than the body.
  expect_400(body.substr(0, head), {"'input'", "Inference-Header-Content-Length"});
  expect_400(body, {"Inference-Header-Content-Length is 1000", std::to_string(body.size())}, 1000);
  // The header cuts the JSON short.
  expect_400(body, {"not valid JSON"}, head - 1);
  const std::string both = one_input(
      R"("datatype":"FP32","shape":[1,4],"data":[1,2,3,4],"parameters":{"binary_data_size":16})");
  expect_400(both, {"'input'", "both 'data' and 'binary_data_size'"}, both.size());
  const std::string negative =
      one_input(R"("datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":-16})");
  expect_400(negative, {"'input'", "binary_data_size"}, negative.size());
  expect_400(one_input(R"("datatype":"FP32","shape":[1,4],"parameters":[])"),
             {"'input'", "'parameters'"});
}

TEST(Protocol, HeaderLength) {
  EXPECT_EQ(parse_header_length("123"), 123u);
  EXPECT_EQ(parse_header_length("0"), 0u);
  for (const char* bad : {"", "-1", "12a", " 12", "0x10", "99999999999999999999999"}) {
    try {
      parse_header_length(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const HttpError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_NE(std::string(e.what()).find("Inference-Header-Content-Length"), std::string::npos);
    }
  }
}

TEST(Protocol, RequestedOutputs) {
  const std::string in =
      R"("inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}])";
  auto all_binary = parse("{" + in + R"(,"parameters":{"binary_data_output":true}})");
  ASSERT_EQ(all_binary.outputs.size(), 1u);
  EXPECT_TRUE(all_binary.outputs[0].binary);
  auto one =
      parse("{" + in + R"(,"outputs":[{"name":"logits","parameters":{"binary_data":true}}]})");
  EXPECT_TRUE(one.outputs[0].binary);
  auto override_default = parse("{" + in +
                                R"(,"parameters":{"binary_data_output":true},
                                   "outputs":[{"name":"logits","parameters":{"binary_data":false}}]})");
  EXPECT_FALSE(override_default.outputs[0].binary);
  auto cls =
      parse("{" + in + R"(,"outputs":[{"name":"logits","parameters":{"classification":9}}]})");
  EXPECT_EQ(cls.outputs[0].classification, 3);  // at most the number of classes

  expect_400("{" + in + R"(,"outputs":[{"name":"probs"}]})",
             {"unknown output 'probs'", "'logits'"});
  expect_400("{" + in + R"(,"outputs":[{"name":"logits"},{"name":"logits"}]})",
             {"'logits'", "twice"});
  expect_400("{" + in + R"(,"outputs":[{"name":"logits","parameters":{"binary_data":1}}]})",
             {"'logits'", "binary_data"});
  expect_400("{" + in + R"(,"outputs":[{"name":"logits","parameters":{"classification":0}}]})",
             {"'logits'", "classification"});
  expect_400("{" + in + R"(,"outputs":{"name":"logits"}})", {"'outputs'"});
  expect_400("{" + in + R"(,"outputs":[{}]})", {"output", "'name'"});
}

TEST(Protocol, EncodesJson) {
  auto req = parse(R"({"id":"a\"b","inputs":[{"name":"input","datatype":"FP32","shape":[2,4],
                      "data":[1,2,3,4,5,6,7,8]}]})");
  const std::vector<float> out = {0.1f, -2.0f, 1e-8f, 3.0f, NAN, 0.5f};
  auto enc = encode_infer_response("mlp", 3, req, schema(), out.data());
  EXPECT_FALSE(enc.header_length);
  auto j = json::parse(enc.body);
  EXPECT_EQ(j["model_name"], "mlp");
  EXPECT_EQ(j["model_version"], "3");
  EXPECT_EQ(j["id"], "a\"b");
  EXPECT_EQ(j["outputs"][0]["name"], "logits");
  EXPECT_EQ(j["outputs"][0]["datatype"], "FP32");
  EXPECT_EQ(j["outputs"][0]["shape"], json({2, 3}));
  EXPECT_EQ(j["outputs"][0]["data"][0].get<float>(), 0.1f);  // shortest text, read back exactly
  EXPECT_EQ(j["outputs"][0]["data"][2].get<float>(), 1e-8f);
  EXPECT_TRUE(j["outputs"][0]["data"][4].is_null());  // JSON has no NaN
  EXPECT_NE(enc.body.find("0.1,"), std::string::npos);
}

TEST(Protocol, EncodesBinary) {
  auto req = parse(R"({"inputs":[{"name":"input","datatype":"FP32","shape":[2,4],
                      "data":[1,2,3,4,5,6,7,8]}],"parameters":{"binary_data_output":true}})");
  const std::vector<float> out = {0.1f, -2.0f, 1e-8f, 3.0f, NAN, 0.5f};
  auto enc = encode_infer_response("mlp", 1, req, schema(), out.data());
  ASSERT_TRUE(enc.header_length);
  auto j = json::parse(enc.body.substr(0, *enc.header_length));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], 24);
  EXPECT_FALSE(j["outputs"][0].contains("data"));
  ASSERT_EQ(enc.body.size() - *enc.header_length, 24u);
  std::vector<float> back(6);
  std::memcpy(back.data(), enc.body.data() + *enc.header_length, 24);
  EXPECT_EQ(std::memcmp(back.data(), out.data(), 24), 0);  // NaN survives, bit for bit
}

TEST(Protocol, EncodesClassification) {
  auto req = parse(R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],
                      "outputs":[{"name":"logits","parameters":{"classification":2}}]})");
  const std::vector<float> out = {0.25f, 2.0f, 1.0f};
  auto j = json::parse(encode_infer_response("m", 1, req, schema(), out.data()).body);
  EXPECT_EQ(j["outputs"][0]["datatype"], "BYTES");
  EXPECT_EQ(j["outputs"][0]["shape"], json({1, 2}));
  EXPECT_EQ(j["outputs"][0]["data"], json({"2.000000:1:dog", "1.000000:2:eel"}));

  req.outputs[0].binary = true;
  auto enc = encode_infer_response("m", 1, req, schema(), out.data());
  ASSERT_TRUE(enc.header_length);
  const std::string bin = enc.body.substr(*enc.header_length);
  uint32_t len = 0;
  std::memcpy(&len, bin.data(), 4);
  EXPECT_EQ(bin.substr(4, len), "2.000000:1:dog");
}

TEST(Protocol, ErrorBody) {
  EXPECT_EQ(json::parse(error_body("bad \"x\"\n"))["error"], "bad \"x\"\n");
  EXPECT_NO_THROW(json::parse(error_body(std::string("\xff\xfe", 2))));  // invalid UTF-8
}

// ---- token models (language models): INT32 ids, rows of 1 to T, right-padded to T ----------

ModelSchema token_schema(int64_t context = 4, int64_t vocab = 5) {
  ModelSchema s;
  s.input_name = "input";
  s.input_shape = {context};
  s.input_datatype = "INT32";
  s.vocab = vocab;
  s.min_tokens = 1;
  s.output_name = "logits";
  s.output_features = vocab;
  s.max_batch_size = 8;
  return s;
}

constexpr int32_t P = kTokenPad;

TEST(ProtocolTokens, RowsArePaddedToTheContext) {
  const auto s = token_schema();
  auto full =
      parse(one_input(R"("datatype":"INT32","shape":[2,4],"data":[[0,1,2,3],[4,4,4,4]])"), s);
  EXPECT_EQ(full.rows, 2);
  EXPECT_EQ(full.input.tokens, (std::vector<int32_t>{0, 1, 2, 3, 4, 4, 4, 4}));
  auto shorter = parse(one_input(R"("datatype":"INT32","shape":[2,2],"data":[1,2,3,4])"), s);
  EXPECT_EQ(shorter.input.tokens, (std::vector<int32_t>{1, 2, P, P, 3, 4, P, P}));
  auto one = parse(one_input(R"("datatype":"INT32","shape":[1,1],"data":[[4]])"), s);
  EXPECT_EQ(one.input.tokens, (std::vector<int32_t>{4, P, P, P}));
}

TEST(ProtocolTokens, OtherIntegerTypesAndWholeFloatsAreConverted) {
  const auto s = token_schema();
  for (const char* dt :
       {"INT64", "INT8", "INT16", "UINT8", "UINT16", "UINT32", "UINT64", "FP32", "FP64"})
    EXPECT_EQ(
        parse(one_input(R"("datatype":")" + std::string(dt) + R"(","shape":[1,3],"data":[0,4,2])"),
              s)
            .input.tokens,
        (std::vector<int32_t>{0, 4, 2, P}))
        << dt;
  EXPECT_EQ(parse(one_input(R"("datatype":"FP64","shape":[1,2],"data":[3.0,1e0])"), s).input.tokens,
            (std::vector<int32_t>{3, 1, P, P}));
  // Binary: INT64 as numpy's default integer array sends it, and INT32.
  const std::string head64 =
      R"({"inputs":[{"name":"input","datatype":"INT64","shape":[1,3],"parameters":{"binary_data_size":24}}]})";
  const int64_t ids64[3] = {4, 0, 3};
  std::string body = head64;
  body.append(reinterpret_cast<const char*>(ids64), sizeof ids64);
  EXPECT_EQ(parse_infer_request(body, head64.size(), s).input.tokens,
            (std::vector<int32_t>{4, 0, 3, P}));
  const std::string head32 =
      R"({"inputs":[{"name":"input","datatype":"INT32","shape":[2,2],"parameters":{"binary_data_size":16}}]})";
  const int32_t ids32[4] = {1, 2, 3, 4};
  body = head32;
  body.append(reinterpret_cast<const char*>(ids32), sizeof ids32);
  EXPECT_EQ(parse_infer_request(body, head32.size(), s).input.tokens,
            (std::vector<int32_t>{1, 2, P, P, 3, 4, P, P}));
}

TEST(ProtocolTokens, IdsOutsideTheVocabularyNameRowAndPosition) {
  const auto s = token_schema();
  expect_400(one_input(R"("datatype":"INT32","shape":[2,3],"data":[[0,1,2],[3,5,4]])"),
             {"'input'", "token id 5", "row 1, position 1", "vocabulary [0, 5)", "5 tokens"},
             std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT64","shape":[1,2],"data":[-1,0])"),
             {"'input'", "token id -1", "row 0, position 0"}, std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT64","shape":[1,1],"data":[70000])"),
             {"'input'", "token id 70000", "row 0, position 0"}, std::nullopt, s);
  const std::string head =
      R"({"inputs":[{"name":"input","datatype":"UINT64","shape":[1,2],"parameters":{"binary_data_size":16}}]})";
  const uint64_t ids[2] = {1, ~uint64_t{0}};
  std::string body = head;
  body.append(reinterpret_cast<const char*>(ids), sizeof ids);
  expect_400(body, {"'input'", "row 0, position 1", "outside the vocabulary"}, head.size(), s);
}

TEST(ProtocolTokens, ValuesMustBeWholeNumbers) {
  const auto s = token_schema();
  expect_400(one_input(R"("datatype":"FP32","shape":[1,3],"data":[1,2.5,3])"),
             {"'input'", "value 2.5", "row 0, position 1", "not a whole number"}, std::nullopt, s);
  expect_400(one_input(R"("datatype":"FP64","shape":[2,1],"data":[1,1e400])"), {"not valid JSON"},
             std::nullopt, s);
  expect_400(one_input(R"("datatype":"FP32","shape":[2,1],"data":[1,1e300])"),
             {"'input'", "value inf", "row 1, position 0"}, std::nullopt, s);
  // An integer datatype refuses a fraction as it does for feature models.
  expect_400(one_input(R"("datatype":"INT32","shape":[1,2],"data":[1,0.5])"),
             {"'input'", "element 1", "INT32"}, std::nullopt, s);
  const std::string head =
      R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]})";
  const float v[2] = {1, NAN};
  std::string body = head;
  body.append(reinterpret_cast<const char*>(v), sizeof v);
  expect_400(body, {"'input'", "row 0, position 1", "not a whole number"}, head.size(), s);
}

TEST(ProtocolTokens, LengthAndShapeErrors) {
  const auto s = token_schema();
  expect_400(one_input(R"("datatype":"INT32","shape":[1,5],"data":[0,1,2,3,4])"),
             {"'input'", "shape [1,5]", "5 tokens per row", "context of 4", "block size"},
             std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT32","shape":[1,0],"data":[[]])"),
             {"'input'", "shape [1,0]", "no tokens", "1 to 4"}, std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT32","shape":[3],"data":[0,1,2])"),
             {"'input'", "shape [3]", "[rows, tokens]"}, std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT32","shape":[1,2,2],"data":[0,1,2,3])"),
             {"'input'", "shape [1,2,2]", "[rows, tokens]"}, std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT32","shape":[0,2],"data":[])"), {"'input'", "no rows"},
             std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT32","shape":[9,1],"data":[0,0,0,0,0,0,0,0,0])"),
             {"'input'", "9 rows", "max_batch_size 8"}, std::nullopt, s);
  expect_400(one_input(R"("datatype":"INT32","shape":[2,2],"data":[0,1,2])"),
             {"'input'", "3 values", "needs 4"}, std::nullopt, s);
  // A model that is not causal takes exactly T ids.
  auto fixed = s;
  fixed.min_tokens = 4;
  expect_400(one_input(R"("datatype":"INT32","shape":[1,3],"data":[0,1,2])"),
             {"'input'", "3 tokens per row", "not causal", "exactly 4"}, std::nullopt, fixed);
  EXPECT_EQ(
      parse(one_input(R"("datatype":"INT32","shape":[1,4],"data":[0,1,2,3])"), fixed).input.tokens,
      (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(ProtocolTokens, WrongDatatype) {
  const auto s = token_schema();
  for (const char* dt : {"BYTES", "BOOL", "FP16", "BF16", "int32"})
    expect_400(
        one_input(R"("datatype":")" + std::string(dt) + R"(","shape":[1,2],"data":[0,1])"),
        {"'input'", "datatype '" + std::string(dt) + "' is not supported", "token ids as INT32"},
        std::nullopt, s);
}

// Any byte string gets a parse or a 400, never a crash or another exception: the property a
// fuzzer checks, here on random mutations of valid requests.
TEST(Protocol, MutatedRequestsNeverCrash) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8};
  auto [binary, head] = binary_request(v, "FP32", 2);
  const std::vector<std::pair<std::string, std::optional<size_t>>> seeds = {
      {one_input(R"("datatype":"FP32","shape":[2,4],"data":[[1,2,3,4],[5,6,7,8]])"), std::nullopt},
      {binary, head},
  };
  std::mt19937_64 rng(42);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    auto [body, hl] = seeds[i % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !body.empty(); ++e) {
      const size_t at = rng() % body.size();
      switch (rng() % 3) {
        case 0:
          body[at] = static_cast<char>(rng());
          break;
        case 1:
          body.erase(at, 1 + rng() % 8);
          break;
        default:
          body.insert(at, 1, "[]{},:\"0-9e."[rng() % 12]);
          break;
      }
    }
    if (hl && rng() % 4 == 0) hl = rng() % (body.size() + 2);
    try {
      parse_infer_request(body, hl, schema());
      ++parsed;
    } catch (const HttpError& e) {
      EXPECT_EQ(e.status(), 400);
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace tern::serve
