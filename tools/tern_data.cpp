// tern-data: turns CSV files into tern's HDF5 dataset layout and describes dataset files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "subcommands.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/h5.h"
#include "tern/version.h"

namespace po = boost::program_options;
using namespace tern;

namespace {

const char* kUsage = R"(Usage: tern-data <command> [options]

Commands:
  convert   CSV -> HDF5 (/train/x, /train/y, /val/x, /val/y), split seeded
  info      print a dataset file's schema and per-feature statistics
  synth     write a synthetic classification dataset (for benchmarks)
  text      UTF-8 text -> character-level tokens (/train/tokens, /val/tokens, vocabulary)

tern-data <command> --help lists the command's options.
)";

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

// Parses a command's options into their variables; false when --help was asked for (and printed).
bool parse_options(int argc, char** argv, const po::options_description& desc) {
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return false;
  }
  po::notify(vm);
  return true;
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

int convert(int argc, char** argv) {
  std::string input, output, label_column = "-1", header = "auto", task = "classification";
  double val_fraction = 0.2;
  int64_t seed = 0;
  po::options_description desc("tern-data convert");
  desc.add_options()("help", "this text")("input", po::value(&input)->required(), "CSV file")(
      "output", po::value(&output)->required(), "HDF5 file to write")(
      "label-column", po::value(&label_column)->default_value(label_column),
      "label column: index (negative counts from the end) or header name")(
      "header", po::value(&header)->default_value(header),
      "first line is a header: auto | yes | no")("task", po::value(&task)->default_value(task),
                                                 "classification (integer labels) | regression")(
      "val-fraction", po::value(&val_fraction)->default_value(val_fraction),
      "share of rows for /val")("seed", po::value(&seed)->default_value(seed),
                                "seed of the train/val split");
  if (!parse_options(argc, argv, desc)) return kExitOk;
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
  auto [train_rows, val_rows] = split_rows(n, val_fraction, static_cast<uint64_t>(seed));
  h5::File out = h5::File::create(output);
  write_split(out, "train", train_rows, x, features, y, classification);
  if (!val_rows.empty()) write_split(out, "val", val_rows, x, features, y, classification);
  if (!names.empty()) names.erase(names.begin() + label);
  out.write_attr("/", "source", input);
  out.write_attr("/", "task", task);
  out.write_attr("/", "feature_names", nlohmann::json(names).dump());
  out.write_attr("/", "created_by", std::string("tern-data ") + version_string());
  std::printf("%s: %lld rows x %lld features -> %s (train %zu, val %zu)\n", input.c_str(),
              static_cast<long long>(n), static_cast<long long>(features), output.c_str(),
              train_rows.size(), val_rows.size());
  return kExitOk;
}

int synth(int argc, char** argv) {
  std::string output;
  int64_t rows = 10000, features = 784, classes = 10, seed = 0;
  double val_fraction = 0.1;
  po::options_description desc("tern-data synth");
  desc.add_options()("help", "this text")("output", po::value(&output)->required(),
                                          "HDF5 file to write")(
      "rows", po::value(&rows)->default_value(rows), "rows in all")(
      "features", po::value(&features)->default_value(features), "features per row")(
      "classes", po::value(&classes)->default_value(classes), "classes")(
      "val-fraction", po::value(&val_fraction)->default_value(val_fraction),
      "share of rows for /val")("seed", po::value(&seed)->default_value(seed), "seed");
  if (!parse_options(argc, argv, desc)) return kExitOk;
  if (rows < 1 || features < 1 || classes < 2)
    throw InputError("synth: need rows >= 1, features >= 1, classes >= 2");
  // Gaussian blobs around one random centre per class: learnable, and cheap to make.
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(classes * features);
  for (auto& c : centres) c = normal(rng);
  std::vector<float> x(rows * features);
  std::vector<double> y(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t k = static_cast<int64_t>(rng() % static_cast<uint64_t>(classes));
    y[r] = static_cast<double>(k);
    for (int64_t f = 0; f < features; ++f)
      x[r * features + f] = centres[k * features + f] + 2.0f * normal(rng);
  }
  auto [train_rows, val_rows] = split_rows(rows, val_fraction, static_cast<uint64_t>(seed));
  h5::File out = h5::File::create(output);
  write_split(out, "train", train_rows, x, features, y, true);
  if (!val_rows.empty()) write_split(out, "val", val_rows, x, features, y, true);
  out.write_attr("/", "task", std::string("classification"));
  out.write_attr("/", "source", std::string("synthetic"));
  out.write_attr("/", "created_by", std::string("tern-data ") + version_string());
  std::printf("synthetic: %lld rows x %lld features, %lld classes -> %s\n",
              static_cast<long long>(rows), static_cast<long long>(features),
              static_cast<long long>(classes), output.c_str());
  return kExitOk;
}

int text(int argc, char** argv) {
  std::string input, output;
  double val_fraction = 0.1;
  po::options_description desc("tern-data text");
  desc.add_options()("help", "this text")("input", po::value(&input)->required(),
                                          "UTF-8 text file")(
      "output", po::value(&output)->required(), "HDF5 file to write")(
      "val-fraction", po::value(&val_fraction)->default_value(val_fraction),
      "the last share of the text becomes /val (a contiguous tail, so no window spans both)");
  if (!parse_options(argc, argv, desc)) return kExitOk;
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
  out.write_attr("/", "created_by", std::string("tern-data ") + version_string());
  std::printf(
      "text: %lld characters, vocabulary of %zu -> %s (/train/tokens %lld, /val/tokens %lld)\n",
      static_cast<long long>(n), vocab.size(), output.c_str(), static_cast<long long>(n - n_val),
      static_cast<long long>(n_val));
  return kExitOk;
}

void describe_split(const h5::File& file, const std::string& name) {
  for (const std::string& ds : {"/" + name + "/x", "/" + name + "/y"}) {
    if (!file.exists(ds)) {
      std::printf("  %-10s missing\n", ds.c_str());
      continue;
    }
    h5::DatasetInfo info = file.info(ds);
    const char* cls = info.type_class == h5::TypeClass::integer    ? "int"
                      : info.type_class == h5::TypeClass::floating ? "float"
                                                                   : "other";
    std::printf("  %-10s %s%zu  %s\n", ds.c_str(), cls, info.type_size * 8,
                shape_str(info.dims).c_str());
  }
}

int info(int argc, char** argv) {
  std::string path;
  po::options_description desc("tern-data info");
  desc.add_options()("help", "this text")("file", po::value(&path)->required(),
                                          "HDF5 dataset file");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: tern-data info FILE\n" << desc;
    return kExitOk;
  }
  po::notify(vm);
  h5::File file = h5::File::open(path);
  std::printf("%s\n", path.c_str());
  for (const char* attr : {"task", "source", "created_by"})
    if (file.exists("/")) try {
        std::printf("  %-10s %s\n", attr, file.read_attr_string("/", attr).c_str());
      } catch (const InputError&) {
      }
  if (file.exists("/train/tokens")) {
    const TokenCorpus c = TokenCorpus::load(path);
    std::printf("  %-10s %zu characters\n  %-14s %lld tokens\n  %-14s %lld tokens\n", "vocab",
                c.vocab.size(), "/train/tokens", static_cast<long long>(c.train.numel()),
                "/val/tokens", static_cast<long long>(c.val.numel()));
    std::string head;
    for (int64_t i = 0; i < std::min<int64_t>(c.train.numel(), 80); ++i)
      head += c.vocab[c.train.data<int32_t>()[i]];
    std::printf("\nstart of /train/tokens:\n%s\n", head.c_str());
    return kExitOk;
  }
  describe_split(file, "train");
  describe_split(file, "val");
  if (!file.exists("/train/x")) return kExitOk;
  Tensor x = file.read("/train/x", DType::f32);
  FeatureStats s = feature_stats(x);
  std::printf("\nper-feature statistics of /train/x (%lld rows):\n%8s %12s %12s %12s %12s\n",
              static_cast<long long>(x.dim(0)), "feature", "mean", "std", "min", "max");
  for (size_t f = 0; f < s.mean.size(); ++f)
    std::printf("%8zu %12.5g %12.5g %12.5g %12.5g\n", f, s.mean[f], s.stddev[f], s.min[f],
                s.max[f]);
  if (file.exists("/train/y") && file.info("/train/y").type_class == h5::TypeClass::integer) {
    Tensor y = file.read("/train/y", DType::i32);
    std::map<int32_t, int64_t> counts;
    for (int64_t i = 0; i < y.numel(); ++i) ++counts[y.data<int32_t>()[i]];
    std::printf("\nlabels of /train/y:");
    for (auto [label, count] : counts)
      std::printf(" %d:%lld", label, static_cast<long long>(count));
    std::printf("\n");
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return run_subcommand(argc, argv, "tern-data", kUsage,
                        [&](const std::string& cmd) -> std::optional<int> {
                          if (cmd == "convert") return convert(argc - 1, argv + 1);
                          if (cmd == "info") return info(argc - 1, argv + 1);
                          if (cmd == "synth") return synth(argc - 1, argv + 1);
                          if (cmd == "text") return text(argc - 1, argv + 1);
                          return std::nullopt;
                        });
}
