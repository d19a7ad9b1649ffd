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

tern-data <command> --help lists the command's options.
)";

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
  import_synthetic({output, rows, features, classes, val_fraction, static_cast<uint64_t>(seed),
                    std::string("tern-data ") + version_string()});
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
