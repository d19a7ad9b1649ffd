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

#include "tern/base/error.h"
#include "tern/base/version.h"
#include "tern/io/data_validation.h"
#include "tern/io/dataset.h"
#include "tern/io/hdf5_file.h"
#include "tern/io/importers.h"
#include "tool_main.h"

namespace po = boost::program_options;
using namespace tern;

namespace {

const char* kUsage = R"(Usage: tern-data <command> [options]

Commands:
  convert   CSV -> HDF5 (/train/x, /train/y, /val/x, /val/y), split seeded
  info      print a dataset file's schema and per-feature statistics
  synth     write a synthetic classification dataset (for benchmarks)
  text      UTF-8 text -> character-level tokens (/train/tokens, /val/tokens, vocabulary)
  validate  check a data file against a model's training data (schema, values, ranges, drift)
  import-log  tern-serve's request log -> HDF5, labelled by feedback or the model's answers

tern-data <command> --help lists the command's options.
)";

// Parses a command's options into their variables, arguments without a name going to option
// `positional` (up to `count` of them; -1: any); false when --help was asked for (and printed).
bool parse_options(int argc, char** argv, const po::options_description& desc,
                   const char* positional = nullptr, int count = 0) {
  po::positional_options_description pos;
  if (positional) pos.add(positional, count);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return false;
  }
  po::notify(vm);
  return true;
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
  CsvImport job{input,
                output,
                label_column,
                header,
                task,
                val_fraction,
                static_cast<uint64_t>(seed),
                std::string("tern-data ") + version_string()};
  const ImportSummary r = import_csv(job);
  std::printf("%s: %lld rows x %lld features -> %s (train %lld, val %lld)\n", input.c_str(),
              static_cast<long long>(r.rows), static_cast<long long>(r.features), output.c_str(),
              static_cast<long long>(r.train_rows), static_cast<long long>(r.val_rows));
  return kExitOk;
}

// "8GB", "500MB", "2GiB", "1000": bytes.
int64_t parse_size(const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  std::transform(unit.begin(), unit.end(), unit.begin(), ::toupper);
  static const std::map<std::string, double> units = {
      {"", 1},      {"B", 1},        {"KB", 1e3},        {"MB", 1e6},          {"GB", 1e9},
      {"TB", 1e12}, {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}};
  const auto it = units.find(unit);
  if (used == 0 || it == units.end() || v <= 0)
    throw InputError("synth: --size " + text + ": expected a size such as 8GB, 500MB or 2GiB");
  return static_cast<int64_t>(v * it->second);
}

int synth(int argc, char** argv) {
  std::string output, size;
  int64_t rows = 10000, features = 784, classes = 10, seed = 0;
  double val_fraction = 0.1;
  po::options_description desc("tern-data synth");
  desc.add_options()("help", "this text")("output", po::value(&output)->required(),
                                          "HDF5 file to write")(
      "rows", po::value(&rows)->default_value(rows), "rows in all")(
      "size", po::value(&size),
      "instead of --rows: as many rows as fit in this size (8GB, 500MB, 2GiB), written a block "
      "at a time")("features", po::value(&features)->default_value(features), "features per row")(
      "classes", po::value(&classes)->default_value(classes), "classes")(
      "val-fraction", po::value(&val_fraction)->default_value(val_fraction),
      "share of rows for /val")("seed", po::value(&seed)->default_value(seed), "seed");
  if (!parse_options(argc, argv, desc)) return kExitOk;
  SyntheticImport job{output,
                      rows,
                      features,
                      classes,
                      0,
                      val_fraction,
                      static_cast<uint64_t>(seed),
                      std::string("tern-data ") + version_string()};
  if (!size.empty()) job.bytes = parse_size(size);
  const SyntheticSummary r = import_synthetic(job);
  std::printf(
      "synthetic: %lld rows x %lld features, %lld classes, %.1f MB -> %s (train %lld, val %lld)\n",
      static_cast<long long>(r.train_rows + r.val_rows), static_cast<long long>(features),
      static_cast<long long>(classes), r.bytes / 1e6, output.c_str(),
      static_cast<long long>(r.train_rows), static_cast<long long>(r.val_rows));
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
  const TextSummary r =
      import_text({input, output, val_fraction, std::string("tern-data ") + version_string()});
  std::printf(
      "text: %lld characters, vocabulary of %zu -> %s (/train/tokens %lld, /val/tokens %lld)\n",
      static_cast<long long>(r.characters), r.vocabulary, output.c_str(),
      static_cast<long long>(r.train_tokens), static_cast<long long>(r.val_tokens));
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

// Exit 0 when every check passes, 1 when one fails, 2 on bad input (usage, unreadable files).
int validate(int argc, char** argv) {
  std::string reference, path, json_path;
  ValidationOptions opt;
  po::options_description desc("tern-data validate --reference=model.h5|data.h5 NEW.h5");
  desc.add_options()("help", "this text")(
      "reference", po::value(&reference)->required(),
      "an export (its reference_profile) or the data file the model was trained on")(
      "file", po::value(&path)->required(), "the data file to check")(
      "json", po::value(&json_path), "also write the report as JSON to this path")(
      "split", po::value(&opt.split)->default_value("all"), "train | val | all (those present)")(
      "method", po::value(&opt.rule.method)->default_value("psi"),
      "drift method: psi | jensen_shannon | wasserstein | auto (Jensen-Shannon for categorical, "
      "Wasserstein for numeric features, as Evidently)")(
      "psi-threshold", po::value(&opt.rule.psi)->default_value(0.2), "PSI above this: drifted")(
      "jensen-shannon-threshold", po::value(&opt.rule.jensen_shannon)->default_value(0.1),
      "Jensen-Shannon distance above this: drifted")(
      "wasserstein-threshold", po::value(&opt.rule.wasserstein)->default_value(0.1),
      "Wasserstein-1 in training standard deviations above this: drifted")(
      "dataset-share", po::value(&opt.rule.dataset_share)->default_value(0.5),
      "the data set drifted when at least this share of features did (reported)")(
      "max-drifted-share", po::value(&opt.max_drifted_share)->default_value(0.0),
      "the drift check fails above this share of drifted features (0: any)")(
      "range-margin", po::value(&opt.range_margin)->default_value(0.1),
      "share of a feature's training range added on either side")(
      "max-out-of-range-share", po::value(&opt.max_out_of_range_share)->default_value(0.01),
      "the range check fails above this share of a feature's values outside")(
      "max-missing-share", po::value(&opt.max_missing_share)->default_value(0.0),
      "the missing check fails above this share of NaN or infinite values");
  if (!parse_options(argc, argv, desc, "file", 1)) return kExitOk;
  opt.rule.validate("tern-data validate");
  if (opt.split != "all" && opt.split != "train" && opt.split != "val")
    throw InputError("--split=" + opt.split + ": expected train, val or all");
  const DataReference ref = load_reference(reference);
  const ValidationReport rep = validate_data(ref, path, opt);
  std::printf("%s against %s (%s reference, %zu features)\n%s\n", path.c_str(), reference.c_str(),
              ref.kind.c_str(), ref.inputs.columns.size(), rep.table.c_str());
  for (const std::string& f : rep.failures) std::printf("FAILED %s\n", f.c_str());
  std::printf("%s\n", rep.passed ? "all checks passed" : "validation failed");
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << rep.json.dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write the report to '" + json_path + "'");
  }
  return rep.passed ? kExitOk : kExitError;
}

int import_log(int argc, char** argv) {
  RequestLogImport job;
  po::options_description desc("tern-data import-log --output data.h5 LOG...");
  desc.add_options()("help", "this text")("input", po::value(&job.inputs)->required()->multitoken(),
                                          "request log files (PATH, PATH.1, ...)")(
      "output", po::value(&job.output)->required(), "HDF5 file to write")(
      "model", po::value(&job.model), "only this model's requests")(
      "labels", po::value(&job.labels)->default_value("feedback"),
      "feedback (rows whose ground truth came back) | predicted (the model's answers)")(
      "task", po::value(&job.task)->default_value("classification"), "classification | regression")(
      "val-fraction", po::value(&job.val_fraction)->default_value(0.0),
      "share of rows held out as /val")("seed", po::value(&job.seed)->default_value(0),
                                        "seed of the split");
  if (!parse_options(argc, argv, desc, "input", -1)) return kExitOk;
  job.created_by = std::string("tern-data ") + version_string();
  const RequestLogSummary s = import_request_log(job);
  std::printf("%s: %lld requests, %lld rows, %lld labelled (%s), %lld features\n",
              job.output.c_str(), static_cast<long long>(s.requests),
              static_cast<long long>(s.rows), static_cast<long long>(s.labelled),
              job.labels.c_str(), static_cast<long long>(s.features));
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
                          if (cmd == "validate") return validate(argc - 1, argv + 1);
                          if (cmd == "import-log") return import_log(argc - 1, argv + 1);
                          return std::nullopt;
                        });
}
