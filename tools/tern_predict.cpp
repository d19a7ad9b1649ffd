// tern-predict: offline batch prediction, HDF5 in, HDF5 out. One process per rank (mpirun, srun,
// or alone): the ranks share the input rows evenly in whole batches, each rank predicts its share
// with the exported model, and rank 0 gathers the predictions and writes the output file.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "rank_tool.h"
#include "tern/base/error.h"
#include "tern/base/version.h"
#include "tern/compute/device.h"
#include "tern/dist/communicator.h"
#include "tern/infer/batch_predict.h"
#include "tern/infer/export.h"
#include "tern/infer/inference_model.h"
#include "tern/io/dataset.h"
#include "tern/io/hdf5_file.h"
#include "tool_main.h"

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

// Parses the command line; kExitOk after --help/--version, -1 to run.
int parse(int argc, char** argv, bool root, PredictionFiles& opt) {
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
  return run_rank_tool(&argc, &argv, "tern-predict", [&](RankTool& tool) -> int {
    const bool root = tool.root();
    PredictionFiles opt;
    const int code = parse(argc, argv, root, opt);
    if (code >= 0) return code;

    const auto start = std::chrono::steady_clock::now();
    auto comm = tool.group.world() > 1 ? make_mpi_communicator(MpiScope::world)
                                       : make_single_communicator();
    // Every rank reads the same model and input, so every rank fails here with the same message.
    auto model = InferenceModel::load(opt.model);
    const h5::File in = h5::File::open(opt.input);
    const std::string dataset = pick_dataset(in, opt.dataset);
    const int64_t rows = check_input(in, dataset, *model, opt.model);
    // Only rank 0 writes; it says whether the output can be written before the work starts.
    int output_ok = 1;
    if (root) {
      try {
        check_prediction_output(opt);
      } catch (const InputError& e) {
        tool.report(e.what());
        output_ok = 0;
      }
    }
    comm->broadcast(&output_ok, sizeof output_ok, 0);
    if (!output_ok) return kExitUsage;
    configure_cpu_threads(opt.threads, tool.group.local_world());
    tool.diverge();

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
    int result = kExitOk;
    if (root) {
      const bool classifier =
          !model->info().labels.empty() || model->info().output_name == "logits";
      result = run_tool("tern-predict", [&]() -> int {
        write_predictions(opt, dataset, *model, all, classifier,
                          std::string("tern-predict ") + version_string());
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf(
            "tern-predict: %lld rows of %s:%s on %d rank(s) -> %s (/predictions [%lld, %lld]%s) "
            "in %.2f s\n",
            static_cast<long long>(rows), opt.input.c_str(), dataset.c_str(), comm->size(),
            opt.output.c_str(), static_cast<long long>(rows), static_cast<long long>(outputs),
            classifier ? ", /classes" : "", secs);
        return kExitOk;
      });
    }
    comm->broadcast(&result, sizeof result, 0);
    return result;
  });
}
