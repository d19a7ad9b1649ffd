// tern-predict: offline batch prediction, HDF5 in, HDF5 out. One process per rank (mpirun, srun,
// or alone): the ranks share the input rows evenly in whole batches, each rank predicts its share
// with the exported model, and rank 0 gathers the predictions and writes the output file.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <unistd.h>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "tern/data.h"
#include "tern/dist.h"
#include "tern/error.h"
#include "tern/export.h"
#include "tern/h5.h"
#include "tern/trainer.h"
#include "tern/version.h"

namespace po = boost::program_options;
using namespace tern;

namespace {

const char* kUsage =
    R"(Usage: tern-predict --model model.h5 --input data.h5 --output predictions.h5 [options]

Offline batch prediction with an exported model (model.h5 of tern-train or tern-ckpt export).
Run alone or under mpirun/srun: the rows are cut into batches of --batch-size, the ranks share
the batches evenly, and rank 0 gathers the predictions and writes the output file (atomically: a
temp file renamed into place). The output is the same bit for bit on any number of ranks, for
the same --batch-size and --threads.

Input: a float dataset [rows, features] (features = the model's input width). Without --dataset
it is /x when the file has one, else /val/x (the validation split written by tern-data convert).

Output datasets:
  /predictions  float32 [rows, outputs]: the model's output (logits for a classifier)
  /classes      int32 [rows]: argmax of each row (first on ties), for a classifier only
                (a model with class labels, or whose output is "logits")
Root attributes: model, model_lineage (JSON), input, input_dataset, created_by; labels (JSON)
when the model has class names.

Exit status: 0 done, 2 bad arguments or input (named in the message), 1 other failures.

)";

struct Options {
  std::string model, input, dataset, output;
  int64_t batch_size = 1024, threads = 0;
};

// The input dataset: the requested one, else /x when the file has it, else /val/x.
std::string pick_dataset(const h5::File& f, const std::string& requested) {
  if (!requested.empty()) {
    if (!f.exists(requested))
      throw InputError("'" + f.path() + "': dataset " + requested + " does not exist (--dataset)");
    return requested;
  }
  for (const char* candidate : {"/x", "/val/x"})
    if (f.exists(candidate)) return candidate;
  throw InputError("'" + f.path() + "' has neither /x nor /val/x; name the input with --dataset");
}

// Checks the dataset is float [rows, features...] with the model's width; returns the rows.
int64_t check_input(const h5::File& f, const std::string& dataset, const InferenceModel& model,
                    const std::string& model_path) {
  const h5::DatasetInfo meta = f.info(dataset);
  const std::string what = "'" + f.path() + "': dataset " + dataset;
  if (meta.type_class != h5::TypeClass::floating)
    throw InputError(what + " is not floating point; the model needs float inputs");
  if (meta.dims.size() < 2)
    throw InputError(what + " has shape " + shape_str(meta.dims) + ", expected [rows, " +
                     std::to_string(model.input_features()) + "]");
  const int64_t features = shape_numel(Shape(meta.dims.begin() + 1, meta.dims.end()));
  if (features != model.input_features())
    throw InputError(what + " has " + std::to_string(features) + " features per row, the model '" +
                     model_path + "' expects " + std::to_string(model.input_features()));
  return meta.dims[0];
}

int64_t argmax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;
  return best;
}

void write_output(const Options& opt, const std::string& dataset, const InferenceModel& model,
                  const Tensor& predictions, bool classifier) {
  const std::string tmp = opt.output + ".tmp." + std::to_string(::getpid());
  try {
    h5::File f = h5::File::create(tmp);
    f.write("/predictions", predictions);
    if (classifier) {
      const int64_t rows = predictions.dim(0), outputs = predictions.dim(1);
      Tensor classes = Tensor::empty({rows}, DType::i32);
      for (int64_t r = 0; r < rows; ++r)
        classes.data<int32_t>()[r] =
            static_cast<int32_t>(argmax(predictions.data<float>() + r * outputs, outputs));
      f.write("/classes", classes);
    }
    f.write_attr("/", "model", std::filesystem::absolute(opt.model).string());
    f.write_attr("/", "model_lineage", model.info().lineage.dump());
    f.write_attr("/", "input", std::filesystem::absolute(opt.input).string());
    f.write_attr("/", "input_dataset", dataset);
    f.write_attr("/", "created_by", std::string("tern-predict ") + version_string());
    if (!model.info().labels.empty())
      f.write_attr("/", "labels", nlohmann::json(model.info().labels).dump());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, opt.output, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error("cannot write '" + opt.output + "': " + ec.message());
  }
}

// Fails early, on rank 0, for an output the run could not write at the end.
void check_output(const Options& opt) {
  namespace fs = std::filesystem;
  const fs::path out = fs::absolute(opt.output);
  const fs::path dir = out.parent_path();
  if (!fs::is_directory(dir))
    throw InputError("--output=" + opt.output + ": directory '" + dir.string() +
                     "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0)
    throw InputError("--output=" + opt.output + ": directory '" + dir.string() +
                     "' is not writable");
  for (const std::string& in : {opt.model, opt.input}) {
    std::error_code ec;
    if (fs::equivalent(out, in, ec))
      throw InputError("--output=" + opt.output + " would overwrite the input '" + in + "'");
  }
}

// Parses the command line; kExitOk after --help/--version, -1 to run.
int parse(int argc, char** argv, bool root, Options& opt) {
  po::options_description desc("Options");
  desc.add_options()("help", "this text")("version", "print the version")(
      "model", po::value(&opt.model), "exported model (model.h5)")(
      "input", po::value(&opt.input), "HDF5 file with the rows to predict")(
      "dataset", po::value(&opt.dataset), "input dataset (default: /x if present, else /val/x)")(
      "output", po::value(&opt.output), "HDF5 file to write")(
      "batch-size", po::value(&opt.batch_size)->default_value(opt.batch_size),
      "rows per predict call on each rank")(
      "threads", po::value(&opt.threads)->default_value(opt.threads),
      "BLAS threads per rank (0: the node's cores shared by its ranks)");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    if (root) std::cout << kUsage << desc;
    return kExitOk;
  }
  if (vm.count("version")) {
    if (root) std::cout << "tern-predict " << version_string() << "\n";
    return kExitOk;
  }
  for (const char* required : {"model", "input", "output"})
    if (!vm.count(required))
      throw InputError(std::string("--") + required + " is required (tern-predict --help)");
  if (opt.batch_size < 1)
    throw InputError("--batch-size=" + std::to_string(opt.batch_size) + ": must be at least 1");
  if (opt.threads < 0)
    throw InputError("--threads=" + std::to_string(opt.threads) + ": must be 0 (auto) or more");
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<ProcessGroup> group;
  try {
    group = std::make_unique<ProcessGroup>(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern-predict: %s\n", e.what());
    return kExitError;
  }
  const bool root = group->rank() == 0;
  Options opt;
  try {
    const int code = parse(argc, argv, root, opt);
    if (code >= 0) return code;
  } catch (const std::exception& e) {  // InputError or po::error: the same on every rank
    if (root) std::fprintf(stderr, "tern-predict: error: %s\n", e.what());
    return kExitUsage;
  }

  bool uniform = true;  // errors so far are the same on every rank (no collective under way)
  try {
    const auto start = std::chrono::steady_clock::now();
    auto comm =
        group->world() > 1 ? make_mpi_communicator(MpiScope::world) : make_single_communicator();
    // Every rank reads the same model and input, so every rank fails here with the same message.
    auto model = InferenceModel::load(opt.model);
    const h5::File in = h5::File::open(opt.input);
    const std::string dataset = pick_dataset(in, opt.dataset);
    const int64_t rows = check_input(in, dataset, *model, opt.model);
    // Only rank 0 writes; it says whether the output can be written before the work starts.
    int output_ok = 1;
    if (root) {
      try {
        check_output(opt);
      } catch (const InputError& e) {
        std::fprintf(stderr, "tern-predict: error: %s\n", e.what());
        output_ok = 0;
      }
    }
    comm->broadcast(&output_ok, sizeof output_ok, 0);
    if (!output_ok) return kExitUsage;
    configure_cpu_threads(opt.threads, group->local_world());
    uniform = false;

    const int64_t outputs = model->output_features();
    // The ranks share whole batches, cut at multiples of --batch-size from the first row: every
    // row is predicted in the same batch whatever the number of ranks, so the output is the same
    // bit for bit (BLAS may round a row differently in a batch of another size).
    const int64_t batches = (rows + opt.batch_size - 1) / opt.batch_size;
    const auto [first, last] = even_share(batches, comm->rank(), comm->size());
    const int64_t begin = first * opt.batch_size, end = std::min(rows, last * opt.batch_size);
    Tensor mine = Tensor::empty({end - begin, outputs});
    for (int64_t b = begin; b < end; b += opt.batch_size) {
      const int64_t e = std::min(end, b + opt.batch_size);
      const Tensor x = in.read_rows(dataset, b, e, DType::f32);
      model->predict(x.data<float>(), e - b, mine.data<float>() + (b - begin) * outputs);
    }
    Tensor all = root ? Tensor::empty({rows, outputs}) : Tensor::empty({0, outputs});
    comm->gatherv(mine.data<float>(), mine.nbytes(), all.data<float>(), 0);

    // Rank 0 writes; every rank exits with its outcome.
    int code = kExitOk;
    if (root) {
      const bool classifier =
          !model->info().labels.empty() || model->info().output_name == "logits";
      try {
        write_output(opt, dataset, *model, all, classifier);
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf(
            "tern-predict: %lld rows of %s:%s on %d rank(s) -> %s (/predictions [%lld, %lld]%s) "
            "in %.2f s\n",
            static_cast<long long>(rows), opt.input.c_str(), dataset.c_str(), comm->size(),
            opt.output.c_str(), static_cast<long long>(rows), static_cast<long long>(outputs),
            classifier ? ", /classes" : "", secs);
      } catch (const InputError& e) {
        std::fprintf(stderr, "tern-predict: error: %s\n", e.what());
        code = kExitUsage;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "tern-predict: error: %s\n", e.what());
        code = kExitError;
      }
    }
    comm->broadcast(&code, sizeof code, 0);
    return code;
  } catch (const InputError& e) {
    if (uniform) {
      if (root) std::fprintf(stderr, "tern-predict: error: %s\n", e.what());
      return kExitUsage;
    }
    // One rank's trouble (say, an unreadable chunk of its rows): the others wait in the gather.
    std::fprintf(stderr, "tern-predict: error (rank %d): %s\n", group->rank(), e.what());
    group->abort(kExitUsage);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern-predict: error (rank %d): %s\n", group->rank(), e.what());
    group->abort(kExitError);
  }
}
