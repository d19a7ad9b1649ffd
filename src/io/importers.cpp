// The importers of tern-data: CSV tables and synthetic data into the HDF5 dataset layout,
// UTF-8 text into character tokens (docs/data.md).
#include "tern/io/importers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tern/base/error.h"
#include "tern/io/dataset.h"
#include "tern/io/hdf5_file.h"

namespace tern {
namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string field;
  bool quoted = false;
  for (char c : line) {
    if (c == '"')
      quoted = !quoted;
    else if (c == ',' && !quoted)
      out.push_back(trim(field)), field.clear();
    else
      field += c;
  }
  out.push_back(trim(field));
  return out;
}

bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

// Shuffles row indices with the seed and cuts off the validation fraction.
std::pair<std::vector<int64_t>, std::vector<int64_t>> split_rows(int64_t n, double val_fraction,
                                                                 uint64_t seed) {
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(idx[i], idx[rng() % static_cast<uint64_t>(i + 1)]);
  const int64_t n_val = static_cast<int64_t>(std::llround(val_fraction * static_cast<double>(n)));
  return {std::vector<int64_t>(idx.begin() + n_val, idx.end()),
          std::vector<int64_t>(idx.begin(), idx.begin() + n_val)};
}

void write_split(h5::File& out, const std::string& name, const std::vector<int64_t>& rows,
                 const std::vector<float>& x, int64_t features, const std::vector<double>& y,
                 bool classification) {
  const int64_t n = static_cast<int64_t>(rows.size());
  Tensor tx = Tensor::empty({n, features});
  for (int64_t i = 0; i < n; ++i)
    std::copy_n(x.begin() + rows[i] * features, features, tx.data<float>() + i * features);
  out.write("/" + name + "/x", tx);
  if (classification) {
    Tensor ty = Tensor::empty({n}, DType::i32);
    for (int64_t i = 0; i < n; ++i) ty.data<int32_t>()[i] = static_cast<int32_t>(y[rows[i]]);
    out.write("/" + name + "/y", ty);
  } else {
    Tensor ty = Tensor::empty({n, 1});
    for (int64_t i = 0; i < n; ++i) ty.data<float>()[i] = static_cast<float>(y[rows[i]]);
    out.write("/" + name + "/y", ty);
  }
}

}  // namespace

ImportSummary import_csv(const CsvImport& job) {
  const std::string& input = job.input;
  const std::string& output = job.output;
  const std::string& label_column = job.label_column;
  const std::string& header = job.header;
  const std::string& task = job.task;
  const double val_fraction = job.val_fraction;
  const uint64_t seed = job.seed;
  if (!(val_fraction >= 0 && val_fraction < 1))
    throw InputError("--val-fraction must be in [0, 1)");
  if (task != "classification" && task != "regression")
    throw InputError("--task=" + task + ": expected classification or regression");
  if (header != "auto" && header != "yes" && header != "no")
    throw InputError("--header=" + header + ": expected auto, yes or no");
  const bool classification = task == "classification";

  std::ifstream in(input);
  if (!in) throw InputError("CSV file '" + input + "' cannot be read (missing?)");
  std::vector<std::string> names;
  std::vector<float> x;
  std::vector<double> y;
  int64_t columns = -1, label = -1, features = 0, line_no = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    if (trim(line).empty()) continue;
    std::vector<std::string> fields = split_csv_line(line);
    if (columns < 0) {
      columns = static_cast<int64_t>(fields.size());
      if (columns < 2)
        throw InputError(input + ":" + std::to_string(line_no) + ": need at least 2 columns");
      double v;
      bool is_header = header == "yes";
      if (header == "auto")
        for (const auto& f : fields) is_header |= !parse_number(f, &v);
      if (is_header) names = fields;
      char* end = nullptr;
      long idx = std::strtol(label_column.c_str(), &end, 10);
      if (end == label_column.c_str() + label_column.size() && !label_column.empty()) {
        label = idx < 0 ? columns + idx : idx;
      } else {
        auto it = std::find(names.begin(), names.end(), label_column);
        if (it == names.end())
          throw InputError("--label-column=" + label_column + ": no such column in the header of " +
                           input);
        label = it - names.begin();
      }
      if (label < 0 || label >= columns)
        throw InputError("--label-column=" + label_column + ": " + input + " has " +
                         std::to_string(columns) + " columns");
      features = columns - 1;
      if (is_header) continue;
    }
    if (static_cast<int64_t>(fields.size()) != columns)
      throw InputError(input + ":" + std::to_string(line_no) + ": " +
                       std::to_string(fields.size()) + " fields, expected " +
                       std::to_string(columns));
    for (int64_t c = 0; c < columns; ++c) {
      double v;
      if (!parse_number(fields[c], &v) || !std::isfinite(v))
        throw InputError(input + ":" + std::to_string(line_no) + ", column " +
                         std::to_string(c + 1) + ": '" + fields[c] + "' is not a finite number");
      if (c == label) {
        if (classification && (v < 0 || v != std::floor(v) || v > INT32_MAX))
          throw InputError(input + ":" + std::to_string(line_no) + ", column " +
                           std::to_string(c + 1) + ": label '" + fields[c] +
                           "' is not a non-negative integer (--task=classification)");
        y.push_back(v);
      } else {
        x.push_back(static_cast<float>(v));
      }
    }
  }
  const int64_t n = static_cast<int64_t>(y.size());
  if (n == 0) throw InputError("CSV file '" + input + "' has no data rows");
  auto [train_rows, val_rows] = split_rows(n, val_fraction, seed);
  h5::File out = h5::File::create(output);
  write_split(out, "train", train_rows, x, features, y, classification);
  if (!val_rows.empty()) write_split(out, "val", val_rows, x, features, y, classification);
  if (!names.empty()) names.erase(names.begin() + label);
  out.write_attr("/", "source", input);
  out.write_attr("/", "task", task);
  out.write_attr("/", "feature_names", nlohmann::json(names).dump());
  out.write_attr("/", "created_by", job.created_by);
  return {n, features, static_cast<int64_t>(train_rows.size()),
          static_cast<int64_t>(val_rows.size())};
}

// Written a block of rows at a time into chunked, uncompressed datasets, so that a file of any
// size is made in bounded memory and can be streamed (StreamedRows reads its rows directly).
SyntheticSummary import_synthetic(const SyntheticImport& job) {
  const int64_t features = job.features, classes = job.classes;
  const int64_t row_bytes = features * static_cast<int64_t>(sizeof(float)) + 4;
  const int64_t rows = job.bytes > 0 ? job.bytes / row_bytes : job.rows;
  if (rows < 1 || features < 1 || classes < 2)
    throw InputError(
        "synth: need rows >= 1 (or --size of at least one row), features >= 1, "
        "classes >= 2");
  if (!(job.val_fraction >= 0.0 && job.val_fraction < 1.0))
    throw InputError("synth: --val-fraction must be in [0, 1)");
  const int64_t n_val =
      static_cast<int64_t>(std::llround(job.val_fraction * static_cast<double>(rows)));
  const int64_t n_train = rows - n_val;
  if (n_train < 1) throw InputError("synth: no rows left for /train");
  // Gaussian blobs around one random centre per class: learnable, and cheap to make.
  std::mt19937_64 rng(job.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(classes * features);
  for (auto& c : centres) c = normal(rng);
  // Chunks of about 4 MB: few enough to index, small enough to write and read in pieces.
  constexpr int64_t kChunkBytes = int64_t{4} << 20;
  const int64_t x_chunk = std::max<int64_t>(1, kChunkBytes / (features * 4));
  const int64_t y_chunk = kChunkBytes / 4;
  h5::File out = h5::File::create(job.output);
  for (auto [name, n] : {std::pair<const char*, int64_t>{"train", n_train}, {"val", n_val}}) {
    if (n == 0) continue;
    const std::string xs = std::string("/") + name + "/x", ys = std::string("/") + name + "/y";
    out.create_rows(xs, DType::f32, {n, features}, x_chunk);
    out.create_rows(ys, DType::i32, {n}, y_chunk);
    for (int64_t r0 = 0; r0 < n; r0 += x_chunk) {
      const int64_t m = std::min(x_chunk, n - r0);
      Tensor x = Tensor::empty({m, features}), y = Tensor::empty({m}, DType::i32);
      for (int64_t r = 0; r < m; ++r) {
        const int64_t k = static_cast<int64_t>(rng() % static_cast<uint64_t>(classes));
        y.data<int32_t>()[r] = static_cast<int32_t>(k);
        float* row = x.data<float>() + r * features;
        for (int64_t f = 0; f < features; ++f)
          row[f] = centres[k * features + f] + 2.0f * normal(rng);
      }
      out.write_rows(xs, r0, x);
      out.write_rows(ys, r0, y);
    }
  }
  out.write_attr("/", "task", std::string("classification"));
  out.write_attr("/", "source", std::string("synthetic"));
  out.write_attr("/", "created_by", job.created_by);
  return {n_train, n_val, rows * row_bytes};
}

TextSummary import_text(const TextImport& job) {
  const std::string& input = job.input;
  const std::string& output = job.output;
  const double val_fraction = job.val_fraction;
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw InputError("text: --val-fraction must be in [0, 1)");
  std::ifstream in(input, std::ios::binary);
  if (!in) throw InputError("text: cannot read '" + input + "'");
  std::stringstream buf;
  buf << in.rdbuf();
  std::vector<std::string> chars;
  try {
    chars = utf8_characters(buf.str());
  } catch (const InputError& e) {
    throw InputError("text: '" + input + "': " + e.what());
  }
  if (chars.size() < 2) throw InputError("text: '" + input + "' has fewer than 2 characters");
  // The vocabulary: the distinct characters in byte order (code point order for UTF-8).
  std::vector<std::string> vocab(chars);
  std::sort(vocab.begin(), vocab.end());
  vocab.erase(std::unique(vocab.begin(), vocab.end()), vocab.end());
  std::map<std::string, int32_t> id;
  for (size_t i = 0; i < vocab.size(); ++i) id[vocab[i]] = static_cast<int32_t>(i);
  const int64_t n = static_cast<int64_t>(chars.size());
  const int64_t n_val = static_cast<int64_t>(std::floor(static_cast<double>(n) * val_fraction));
  Tensor train = Tensor::empty({n - n_val}, DType::i32), val = Tensor::empty({n_val}, DType::i32);
  for (int64_t i = 0; i < n; ++i)
    (i < n - n_val ? train.data<int32_t>()[i] : val.data<int32_t>()[i - (n - n_val)]) =
        id[chars[i]];
  h5::File out = h5::File::create(output);
  out.write("/train/tokens", train);
  if (n_val > 0) out.write("/val/tokens", val);
  out.write_attr("/", "vocab", nlohmann::json(vocab).dump());
  out.write_attr("/", "task", std::string("language_model"));
  out.write_attr("/", "source", input);
  out.write_attr("/", "created_by", job.created_by);
  return {n, vocab.size(), n - n_val, n_val};
}

RequestLogSummary import_request_log(const RequestLogImport& job) {
  if (job.labels != "feedback" && job.labels != "predicted")
    throw InputError("--labels=" + job.labels + ": expected feedback or predicted");
  if (job.task != "classification" && job.task != "regression")
    throw InputError("--task=" + job.task + ": expected classification or regression");
  const bool classification = job.task == "classification";
  struct Request {
    std::string where;
    std::optional<std::string> id;
    std::vector<std::vector<double>> input, output;
  };
  std::vector<Request> requests;
  std::map<std::string, std::vector<double>> truth;  // by request id
  // Rows of numbers; null (how JSON carries a NaN or infinite output) as NaN.
  auto rows_of = [](const nlohmann::json& j) {
    std::vector<std::vector<double>> out;
    for (const auto& row : j) {
      out.emplace_back();
      for (const auto& v : row) out.back().push_back(v.is_null() ? NAN : v.get<double>());
    }
    return out;
  };
  for (const std::string& path : job.inputs) {
    std::ifstream in(path);
    if (!in) throw InputError("request log '" + path + "' cannot be read (missing?)");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
    for (size_t n = 0; n < lines.size(); ++n) {
      const std::string& line = lines[n];
      if (trim(line).empty()) continue;
      const std::string where = path + ":" + std::to_string(n + 1);
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) {
        // The server may be writing the last line, or died while it did.
        if (n + 1 == lines.size()) {
          std::fprintf(stderr, "%s: an unfinished last line, left out\n", where.c_str());
          continue;
        }
        throw InputError(where + ": not a JSON object");
      }
      if (!job.model.empty() && j.value("model", "") != job.model) continue;
      try {
        if (auto fb = j.find("feedback"); fb != j.end()) {
          std::vector<double> values;
          for (const auto& v : fb->at("values")) values.push_back(v.get<double>());
          truth[fb->at("id").get<std::string>()] = std::move(values);
          continue;
        }
        Request r;
        r.where = where;
        if (j.contains("id")) r.id = j.at("id").get<std::string>();
        r.input = rows_of(j.at("input"));
        r.output = rows_of(j.at("output"));
        if (r.input.size() != r.output.size())
          throw InputError(where + ": " + std::to_string(r.input.size()) + " input rows but " +
                           std::to_string(r.output.size()) + " output rows");
        requests.push_back(std::move(r));
      } catch (const nlohmann::json::exception& e) {
        throw InputError(where + ": not a request log line (" + e.what() + ")");
      }
    }
  }
  RequestLogSummary summary;
  summary.requests = static_cast<int64_t>(requests.size());
  std::vector<float> x;
  std::vector<double> y;
  for (const Request& r : requests) {
    summary.rows += static_cast<int64_t>(r.input.size());
    const std::vector<double>* labels = nullptr;
    if (job.labels == "feedback") {
      auto it = r.id ? truth.find(*r.id) : truth.end();
      if (it == truth.end()) continue;
      if (it->second.size() != r.input.size())
        throw InputError(r.where + ": feedback for id '" + *r.id + "' has " +
                         std::to_string(it->second.size()) + " value(s) for " +
                         std::to_string(r.input.size()) + " row(s)");
      labels = &it->second;
    }
    for (size_t i = 0; i < r.input.size(); ++i) {
      const auto& row = r.input[i];
      if (summary.features == 0) summary.features = static_cast<int64_t>(row.size());
      if (static_cast<int64_t>(row.size()) != summary.features)
        throw InputError(r.where + ": row " + std::to_string(i) + " has " +
                         std::to_string(row.size()) + " features, earlier rows " +
                         std::to_string(summary.features) + " (mixed models? use --model)");
      if (!classification && r.output[i].size() != 1)
        throw InputError(r.where + ": the data layout holds one regression target per row; " +
                         "this model answers " + std::to_string(r.output[i].size()));
      double label;
      if (labels) {
        label = (*labels)[i];
      } else if (classification) {
        const auto& out = r.output[i];
        label = static_cast<double>(std::max_element(out.begin(), out.end()) - out.begin());
      } else {
        label = r.output[i][0];
      }
      for (double v : row) x.push_back(static_cast<float>(v));
      y.push_back(label);
      ++summary.labelled;
    }
  }
  if (summary.labelled == 0)
    throw InputError("the request log holds no " +
                     std::string(job.labels == "feedback" ? "row with feedback" : "row") +
                     (job.model.empty() ? "" : " of model '" + job.model + "'"));
  auto [train_rows, val_rows] = split_rows(summary.labelled, job.val_fraction, job.seed);
  h5::File out = h5::File::create(job.output);
  write_split(out, "train", train_rows, x, summary.features, y, classification);
  if (!val_rows.empty()) write_split(out, "val", val_rows, x, summary.features, y, classification);
  out.write_attr("/", "source", std::string("tern-serve request log"));
  out.write_attr("/", "task", job.task);
  out.write_attr("/", "created_by", job.created_by);
  return summary;
}

}  // namespace tern
