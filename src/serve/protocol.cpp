#include "tern/serve/protocol.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>

#include <nlohmann/json.hpp>

// Binary tensor data is little-endian on the wire; the copies below are plain memcpy.
static_assert(std::endian::native == std::endian::little,
              "tern-serve assumes a little-endian host");

namespace tern::serve {

using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& message) { throw HttpError(400, message); }

std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// A JSON string literal; invalid UTF-8 (a folder name, a label) is replaced, never thrown on.
std::string json_string(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// Reads one JSON element of the declared datatype into Out (float for features, double for
// token ids, which are checked for whole numbers and their range after); false if it is not one.
template <class Out>
using JsonReader = bool (*)(const json&, Out&);
// Converts n little-endian elements to Out.
template <class Out>
using BinaryReader = void (*)(const char*, size_t, Out*);

template <class T, class Out>
bool read_json(const json& e, Out& out) {
  if constexpr (std::is_floating_point_v<T>) {
    if (!e.is_number()) return false;
    // Through the declared type: an FP32 value is what a float holds.
    out = static_cast<Out>(static_cast<T>(e.get<double>()));
    return true;
  } else {
    if (e.is_number_unsigned()) {
      const uint64_t v = e.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) return false;
      out = static_cast<Out>(v);
      return true;
    }
    if (!e.is_number_integer() || std::is_unsigned_v<T>) return false;
    const int64_t v = e.get<int64_t>();
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min())) return false;
    out = static_cast<Out>(v);
    return true;
  }
}

template <class T, class Out>
void read_binary(const char* src, size_t n, Out* dst) {
  if constexpr (std::is_same_v<T, Out>) {
    std::memcpy(dst, src, n * sizeof(Out));
  } else {
    for (size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, src + i * sizeof(T), sizeof(T));
      dst[i] = static_cast<Out>(v);
    }
  }
}

// Every feature value finite and within FP32's range. A JSON number or a wider binary type that
// became infinite when converted was not representable; NaN and infinities of the request itself
// are not finite. binary: the input's bytes when it came as binary data.
void check_feature_values(const std::vector<float>& values, const ModelSchema& schema,
                          const std::string& input, std::string_view type, const char* binary) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isfinite(values[i])) continue;
    const int64_t features = schema.input_features();
    const int64_t row = static_cast<int64_t>(i) / features, f = static_cast<int64_t>(i) % features;
    std::string where =
        "input " + quote(input) + " row " + std::to_string(row) + ", feature " + std::to_string(f);
    if (static_cast<size_t>(f) < schema.feature_names.size())
      where += " (" + quote(schema.feature_names[f]) + ")";
    double original = values[i];
    if (binary && type == "FP64")
      std::memcpy(&original, binary + i * sizeof(double), sizeof(double));
    const bool given_non_finite = binary ? !std::isfinite(original) : false;
    if (given_non_finite)
      throw InputValueError("non_finite",
                            where + ": value " +
                                std::string(std::isnan(original) ? "NaN" : "infinite") +
                                " is not a finite number");
    char text[96];
    if (std::isfinite(original))
      std::snprintf(text, sizeof text, "value %g", original);
    else
      std::snprintf(text, sizeof text, "a value beyond +-3.40282e+38");
    throw InputValueError(
        "not_representable",
        where + ": " + text + " is not representable as FP32, the model's " + "input type");
  }
}

struct DataType {
  std::string_view name;
  size_t size;
  JsonReader<float> from_json;
  BinaryReader<float> from_binary;
  JsonReader<double> ids_from_json;
  BinaryReader<double> ids_from_binary;
};

template <class T>
constexpr DataType type_of(std::string_view name) {
  return {name,
          sizeof(T),
          &read_json<T, float>,
          &read_binary<T, float>,
          &read_json<T, double>,
          &read_binary<T, double>};
}

// The model computes in FP32; other numeric types are converted on the way in (a tern
// extension: Triton would reject them), so clients holding float64 or integer arrays need no
// cast. BOOL, BYTES, FP16 and BF16 are refused.
constexpr DataType kDataTypes[] = {
    type_of<float>("FP32"),      type_of<double>("FP64"),     type_of<int8_t>("INT8"),
    type_of<int16_t>("INT16"),   type_of<int32_t>("INT32"),   type_of<int64_t>("INT64"),
    type_of<uint8_t>("UINT8"),   type_of<uint16_t>("UINT16"), type_of<uint32_t>("UINT32"),
    type_of<uint64_t>("UINT64"),
};

const DataType* find_type(std::string_view name) {
  for (const auto& t : kDataTypes)
    if (t.name == name) return &t;
  return nullptr;
}

// Appends the numbers of `node` (flat, or nested to match `shape`) to `out`.
template <class Out>
void flatten(const json& node, size_t depth, const std::vector<int64_t>& shape,
             const DataType& type, JsonReader<Out> read, const std::string& input,
             std::vector<Out>& out) {
  const bool nested = !node.empty() && node.front().is_array();
  if (nested) {
    if (depth + 1 >= shape.size())
      bad("input " + quote(input) + ": 'data' is nested deeper than its shape " +
          shape_text(shape));
    if (static_cast<int64_t>(node.size()) != shape[depth])
      bad("input " + quote(input) + ": 'data' has " + std::to_string(node.size()) +
          " elements at depth " + std::to_string(depth) + ", its shape " + shape_text(shape) +
          " says " + std::to_string(shape[depth]));
    for (const auto& e : node) {
      if (!e.is_array())
        bad("input " + quote(input) + ": 'data' mixes numbers and arrays at depth " +
            std::to_string(depth + 1));
      flatten(e, depth + 1, shape, type, read, input, out);
    }
    return;
  }
  if (depth > 0 && (depth + 1 != shape.size() || static_cast<int64_t>(node.size()) != shape[depth]))
    bad("input " + quote(input) + ": 'data' has " + std::to_string(node.size()) +
        " numbers at depth " + std::to_string(depth) + ", its shape " + shape_text(shape) +
        " does not nest that way");
  for (const auto& e : node) {
    Out v;
    if (!read(e, v))
      bad("input " + quote(input) + ": 'data' element " + std::to_string(out.size()) + " (" +
          e.dump(-1, ' ', false, json::error_handler_t::replace) + ") is not a valid " +
          std::string(type.name) + " value");
    out.push_back(v);
  }
}

// The request's 'shape', as numbers.
std::vector<int64_t> read_shape(const json& shape_json, const std::string& input) {
  if (!shape_json.is_array() || shape_json.empty())
    bad("input " + quote(input) + ": 'shape' must be a non-empty array of integers");
  std::vector<int64_t> shape;
  for (const auto& d : shape_json) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 40))
      bad("input " + quote(input) + ": 'shape' " + shape_json.dump() +
          " must hold non-negative integers");
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// The number of rows, shape[0], checked against max_batch_size.
int64_t check_rows(const std::vector<int64_t>& shape, const ModelSchema& schema,
                   const std::string& input) {
  const int64_t rows = shape[0];
  if (rows < 1) bad("input " + quote(input) + ": shape " + shape_text(shape) + " has no rows");
  if (schema.max_batch_size > 0 && rows > schema.max_batch_size)
    bad("input " + quote(input) + ": " + std::to_string(rows) +
        " rows exceed the model's max_batch_size " + std::to_string(schema.max_batch_size));
  return rows;
}

// The request's shape, checked against the schema; returns the number of rows.
int64_t check_shape(const json& shape_json, const ModelSchema& schema, const std::string& input,
                    std::vector<int64_t>& shape) {
  shape = read_shape(shape_json, input);
  const int64_t features = schema.input_features();
  std::vector<int64_t> expected = {-1};
  expected.insert(expected.end(), schema.input_shape.begin(), schema.input_shape.end());
  // [N, features...] as the model declares it, or flattened to [N, F].
  bool match = shape.size() == expected.size() &&
               std::equal(shape.begin() + 1, shape.end(), expected.begin() + 1);
  match = match || (shape.size() == 2 && shape[1] == features);
  if (!match)
    bad("input " + quote(input) + ": shape " + shape_text(shape) + " does not match the model's " +
        shape_text(expected));
  return check_rows(shape, schema, input);
}

// Token models: the shape must be [rows, L] with min_tokens <= L <= the context.
int64_t check_token_shape(const json& shape_json, const ModelSchema& schema,
                          const std::string& input, std::vector<int64_t>& shape) {
  shape = read_shape(shape_json, input);
  const int64_t context = schema.input_features();
  const bool fixed = schema.min_tokens >= context;
  const std::string per_row =
      fixed ? "exactly " + std::to_string(context) : "1 to " + std::to_string(context);
  if (shape.size() != 2)
    bad("input " + quote(input) + ": shape " + shape_text(shape) +
        " must be [rows, tokens]: token ids, " + per_row + " per row");
  const int64_t rows = check_rows(shape, schema, input);
  const int64_t length = shape[1];
  if (length == 0)
    bad("input " + quote(input) + ": shape " + shape_text(shape) +
        " has no tokens; each row needs " + per_row + " token ids");
  if (length > context)
    bad("input " + quote(input) + ": shape " + shape_text(shape) + " has " +
        std::to_string(length) + " tokens per row, more than the model's context of " +
        std::to_string(context) + " (its block size)");
  if (length < schema.min_tokens)
    bad("input " + quote(input) + ": shape " + shape_text(shape) + " has " +
        std::to_string(length) + " tokens per row; this model is not causal and takes " + per_row);
  return rows;
}

// A number as a user wrote it: integers without a fraction, others in their shortest form.
std::string number_text(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e18)
    return std::to_string(static_cast<int64_t>(v));
  char buf[32];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

// Token ids [rows, length] -> rows right-padded to the context with kTokenPad; 400 naming the
// row and position of a value that is no whole number or outside [0, vocab).
std::vector<int32_t> pad_tokens(const std::vector<double>& ids, int64_t rows, int64_t length,
                                const ModelSchema& schema, const std::string& input) {
  const int64_t context = schema.input_features();
  std::vector<int32_t> out(static_cast<size_t>(rows * context), kTokenPad);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = 0; p < length; ++p) {
      const double v = ids[static_cast<size_t>(r * length + p)];
      const std::string where = " at row " + std::to_string(r) + ", position " + std::to_string(p);
      if (!(std::isfinite(v) && v == std::floor(v)))
        bad("input " + quote(input) + ": value " + number_text(v) + where +
            " is not a whole number; token ids are integers");
      if (v < 0 || v >= static_cast<double>(schema.vocab))
        bad("input " + quote(input) + ": token id " + number_text(v) + where +
            " is outside the vocabulary [0, " + std::to_string(schema.vocab) + ") of " +
            std::to_string(schema.vocab) + " tokens");
      out[static_cast<size_t>(r * context + p)] = static_cast<int32_t>(v);
    }
  return out;
}

const json* member(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

bool bool_parameter(const json& params, const char* key, const std::string& where) {
  const json* v = member(params, key);
  if (!v) return false;
  if (!v->is_boolean()) bad(where + ": parameter '" + key + "' must be true or false");
  return v->get<bool>();
}

void parse_outputs(const json& outputs, bool binary_default, const ModelSchema& schema,
                   InferRequest& req) {
  if (!outputs.is_array()) bad("'outputs' must be an array");
  for (const auto& o : outputs) {
    if (!o.is_object()) bad("'outputs' must hold objects");
    const json* name = member(o, "name");
    if (!name || !name->is_string()) bad("every output needs a string 'name'");
    const std::string n = name->get<std::string>();
    if (n != schema.output_name)
      bad("unknown output " + quote(n) + "; the model has output " + quote(schema.output_name));
    for (const auto& prev : req.outputs)
      if (prev.name == n) bad("output " + quote(n) + " is requested twice");
    RequestedOutput out{n, binary_default, 0};
    if (const json* params = member(o, "parameters")) {
      const std::string where = "output " + quote(n);
      if (!params->is_object()) bad(where + ": 'parameters' must be an object");
      if (member(*params, "shared_memory_region"))
        bad(where + ": shared memory outputs are not supported");
      if (member(*params, "binary_data"))
        out.binary = bool_parameter(*params, "binary_data", where);
      if (const json* k = member(*params, "classification")) {
        if (!k->is_number_unsigned() || k->get<uint64_t>() < 1)
          bad(where + ": parameter 'classification' must be a positive integer");
        out.classification =
            static_cast<int64_t>(std::min<uint64_t>(k->get<uint64_t>(), schema.output_features));
      }
    }
    req.outputs.push_back(out);
  }
}

}  // namespace

size_t parse_header_length(std::string_view value) {
  size_t n = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || ptr != value.data() + value.size() || value.empty())
    bad("header Inference-Header-Content-Length: '" + std::string(value) + "' is not a byte count");
  return n;
}

InferRequest parse_infer_request(std::string_view body, std::optional<size_t> header_length,
                                 const ModelSchema& schema) {
  std::string_view json_text = body, binary;
  if (header_length) {
    if (*header_length > body.size())
      bad("header Inference-Header-Content-Length is " + std::to_string(*header_length) +
          " but the body has only " + std::to_string(body.size()) + " bytes");
    json_text = body.substr(0, *header_length);
    binary = body.substr(*header_length);
  }
  json doc;
  try {
    doc = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number past double's range (1e400). Drop nlohmann's
    // "[json.exception.parse_error.101] " prefix: users need the position only.
    std::string what = e.what();
    const auto cut = what.find("] ");
    bad("request body is not valid JSON: " +
        (cut == std::string::npos ? what : what.substr(cut + 2)));
  }
  if (!doc.is_object()) bad("the request must be a JSON object");

  InferRequest req;
  if (const json* id = member(doc, "id")) {
    if (!id->is_string()) bad("'id' must be a string");
    req.id = id->get<std::string>();
  }
  bool binary_output = false;
  if (const json* params = member(doc, "parameters")) {
    if (!params->is_object()) bad("'parameters' must be an object");
    binary_output = bool_parameter(*params, "binary_data_output", "request");
    // Triton's request parameters: the time the request may take, in microseconds, and its
    // priority level (1 is the highest; 0 the model's default).
    if (const json* t = member(*params, "timeout")) {
      if (!t->is_number_unsigned())
        bad("request: parameter 'timeout' must be a non-negative integer (microseconds)");
      req.timeout_us = t->get<uint64_t>();
    }
    if (const json* p = member(*params, "priority")) {
      if (!p->is_number_unsigned() || p->get<uint64_t>() > 1000)
        bad("request: parameter 'priority' must be an integer in [0, 1000] (1 is the highest)");
      req.priority = p->get<int64_t>();
    }
  }

  const json* inputs = member(doc, "inputs");
  if (!inputs || !inputs->is_array() || inputs->empty())
    bad("the request needs 'inputs', a non-empty array; the model expects input " +
        quote(schema.input_name));
  bool seen = false;
  size_t binary_used = 0;
  for (const auto& in : *inputs) {
    if (!in.is_object()) bad("'inputs' must hold objects");
    const json* name = member(in, "name");
    if (!name || !name->is_string()) bad("every input needs a string 'name'");
    const std::string n = name->get<std::string>();
    if (n != schema.input_name)
      bad("unknown input " + quote(n) + "; the model expects input " + quote(schema.input_name));
    if (seen) bad("input " + quote(n) + " is given twice");
    seen = true;

    const json* dt = member(in, "datatype");
    if (!dt || !dt->is_string()) bad("input " + quote(n) + ": needs a string 'datatype'");
    const DataType* type = find_type(dt->get<std::string>());
    if (!type)
      bad("input " + quote(n) + ": datatype " + quote(dt->get<std::string>()) +
          (schema.tokens() ? " is not supported; the model takes token ids as INT32 (other "
                             "integer types, and FP32/FP64 holding whole numbers, are converted)"
                           : " is not supported; the model takes FP32 (FP64 and integer types "
                             "are converted)"));
    const json* shape_json = member(in, "shape");
    if (!shape_json) bad("input " + quote(n) + ": needs 'shape'");
    std::vector<int64_t> shape;
    req.rows = schema.tokens() ? check_token_shape(*shape_json, schema, n, shape)
                               : check_shape(*shape_json, schema, n, shape);
    // Values per row in the request: a token row's length, before padding.
    const int64_t row_values = schema.tokens() ? shape[1] : schema.input_features();
    const size_t numel = static_cast<size_t>(req.rows * row_values);

    std::optional<size_t> binary_size;
    if (const json* params = member(in, "parameters")) {
      if (!params->is_object()) bad("input " + quote(n) + ": 'parameters' must be an object");
      if (member(*params, "shared_memory_region"))
        bad("input " + quote(n) + ": shared memory inputs are not supported");
      if (const json* size = member(*params, "binary_data_size")) {
        if (!size->is_number_unsigned())
          bad("input " + quote(n) + ": 'binary_data_size' must be a non-negative integer");
        binary_size = size->get<size_t>();
      }
    }
    const json* data = member(in, "data");
    std::vector<double> ids;  // token models: the values before their checks
    if (binary_size) {
      if (data) bad("input " + quote(n) + ": has both 'data' and 'binary_data_size'");
      if (!header_length)
        bad("input " + quote(n) +
            ": 'binary_data_size' needs the Inference-Header-Content-Length header");
      if (*binary_size != numel * type->size)
        bad("input " + quote(n) + ": binary_data_size " + std::to_string(*binary_size) +
            " does not match shape " + shape_text(shape) + " of " + std::string(type->name) + " (" +
            std::to_string(numel * type->size) + " bytes)");
      if (binary.size() - binary_used < *binary_size)
        bad("input " + quote(n) + ": binary_data_size " + std::to_string(*binary_size) +
            " exceeds the " + std::to_string(binary.size() - binary_used) +
            " bytes of binary data after the JSON");
      if (schema.tokens()) {
        ids.resize(numel);
        type->ids_from_binary(binary.data() + binary_used, numel, ids.data());
      } else {
        req.input.features.resize(numel);
        type->from_binary(binary.data() + binary_used, numel, req.input.features.data());
      }
      binary_used += *binary_size;
    } else {
      if (!data || !data->is_array())
        bad("input " + quote(n) + ": needs 'data' (an array) or parameters.binary_data_size");
      // Every JSON number takes a byte at least: a shape that claims more is caught below,
      // without reserving its memory first.
      size_t got = 0;
      if (schema.tokens()) {
        ids.reserve(std::min(numel, json_text.size()));
        flatten(*data, 0, shape, *type, type->ids_from_json, n, ids);
        got = ids.size();
      } else {
        req.input.features.reserve(std::min(numel, json_text.size()));
        flatten(*data, 0, shape, *type, type->from_json, n, req.input.features);
        got = req.input.features.size();
      }
      if (got != numel)
        bad("input " + quote(n) + ": 'data' has " + std::to_string(got) + " values, shape " +
            shape_text(shape) + " needs " + std::to_string(numel));
    }
    if (schema.tokens())
      req.input.tokens = pad_tokens(ids, req.rows, row_values, schema, n);
    else
      check_feature_values(req.input.features, schema, n, type->name,
                           binary_size ? binary.data() + binary_used - *binary_size : nullptr);
  }
  if (!seen) bad("missing input " + quote(schema.input_name));
  if (binary_used != binary.size())
    bad(std::to_string(binary.size() - binary_used) +
        " bytes of binary data after the JSON belong to no input");

  if (const json* outputs = member(doc, "outputs"))
    parse_outputs(*outputs, binary_output, schema, req);
  if (req.outputs.empty()) req.outputs.push_back({schema.output_name, binary_output, 0});
  return req;
}

void append_float(std::string& out, float v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

namespace {

// Triton's classification format: "score:index" or "score:index:label", best first.
std::vector<std::string> classify(const float* row, int64_t width, int64_t k,
                                  const std::vector<std::string>& labels) {
  std::vector<int64_t> order(static_cast<size_t>(width));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a < b);
  });
  std::vector<std::string> out;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t c = order[static_cast<size_t>(i)];
    std::string s = std::to_string(row[c]) + ":" + std::to_string(c);
    if (static_cast<size_t>(c) < labels.size()) s += ":" + labels[static_cast<size_t>(c)];
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

EncodedResponse encode_infer_response(const std::string& model_name, int64_t version,
                                      const InferRequest& request, const ModelSchema& schema,
                                      const float* output) {
  const int64_t width = schema.output_features;
  const size_t n = static_cast<size_t>(request.rows * width);
  std::string head = "{\"model_name\":" + json_string(model_name) + ",\"model_version\":\"" +
                     std::to_string(version) + "\"";
  if (request.id) head += ",\"id\":" + json_string(*request.id);
  head += ",\"outputs\":[";
  std::string binary;
  for (size_t o = 0; o < request.outputs.size(); ++o) {
    const RequestedOutput& req = request.outputs[o];
    head += (o ? ",{" : "{") + std::string("\"name\":") + json_string(req.name);
    if (req.classification > 0) {
      const int64_t k = req.classification;
      std::vector<std::string> classes;
      for (int64_t r = 0; r < request.rows; ++r) {
        auto top = classify(output + r * width, width, k, schema.labels);
        classes.insert(classes.end(), top.begin(), top.end());
      }
      head += ",\"datatype\":\"BYTES\",\"shape\":[" + std::to_string(request.rows) + "," +
              std::to_string(k) + "]";
      if (req.binary) {
        // BYTES elements on the wire: a 4-byte little-endian length, then the bytes.
        size_t size = 0;
        for (const auto& s : classes) {
          const uint32_t len = static_cast<uint32_t>(s.size());
          binary.append(reinterpret_cast<const char*>(&len), sizeof len);
          binary += s;
          size += sizeof len + s.size();
        }
        head += ",\"parameters\":{\"binary_data_size\":" + std::to_string(size) + "}}";
      } else {
        head +=
            ",\"data\":" + json(classes).dump(-1, ' ', false, json::error_handler_t::replace) + "}";
      }
      continue;
    }
    head += ",\"datatype\":\"FP32\",\"shape\":[" + std::to_string(request.rows) + "," +
            std::to_string(width) + "]";
    if (req.binary) {
      binary.append(reinterpret_cast<const char*>(output), n * sizeof(float));
      head += ",\"parameters\":{\"binary_data_size\":" + std::to_string(n * sizeof(float)) + "}}";
    } else {
      head += ",\"data\":[";
      head.reserve(head.size() + n * 12);
      for (size_t i = 0; i < n; ++i) {
        if (i) head += ',';
        append_float(head, output[i]);
      }
      head += "]}";
    }
  }
  head += "]}";
  EncodedResponse out;
  if (!binary.empty() || std::any_of(request.outputs.begin(), request.outputs.end(),
                                     [](const RequestedOutput& o) { return o.binary; })) {
    out.header_length = head.size();
    head += binary;
  }
  out.body = std::move(head);
  return out;
}

std::string error_body(std::string_view message) {
  return "{\"error\":" + json_string(std::string(message)) + "}";
}

}  // namespace tern::serve
