// tern-generate: samples text from an exported character-level language model (model.h5 of a
// tern-train run on a token corpus), one character at a time.
#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>

#include "tern/base/error.h"
#include "tern/base/version.h"
#include "tern/compute/device.h"
#include "tern/infer/inference_model.h"
#include "tern/infer/sampler.h"
#include "tool_main.h"

namespace po = boost::program_options;
using namespace tern;

namespace {

const char* kUsage = R"(Usage: tern-generate --model model.h5 [options]

Samples text from an exported language model: the model sees the last T characters (its
context), the next character is drawn from its softmax at --temperature, among the --top-k most
likely, with a seeded generator (the same seed gives the same text). The prompt's characters
must be in the model's vocabulary.

)";

int run(int argc, char** argv) {
  std::string model_path, prompt = "\n";
  int64_t length = 500, top_k = 0;
  double temperature = 1.0;
  uint64_t seed = 0;
  std::string device = "cpu";
  po::options_description desc("Options");
  desc.add_options()("help", "this text")("version", "print the version")(
      "model", po::value(&model_path), "exported model (model.h5)")(
      "prompt", po::value(&prompt)->default_value(prompt, "newline"), "text to continue")(
      "length", po::value(&length)->default_value(length), "characters to generate")(
      "temperature", po::value(&temperature)->default_value(temperature),
      "softmax temperature (> 0; lower is more conservative)")(
      "top-k", po::value(&top_k)->default_value(top_k), "sample among the k likeliest; 0 = all")(
      "seed", po::value(&seed)->default_value(seed), "seed of the sampler")(
      "device", po::value(&device)->default_value(device),
      "where the model runs: cpu | cuda (the first GPU) | auto (a GPU when one is visible)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage << desc;
    return kExitOk;
  }
  if (vm.count("version")) {
    std::cout << "tern-generate " << version_string() << "\n";
    return kExitOk;
  }
  if (model_path.empty()) throw InputError("--model is required");
  if (!(temperature > 0)) throw InputError("--temperature must be > 0");
  if (length < 0 || top_k < 0) throw InputError("--length and --top-k must be >= 0");

  if (device != "cpu" && device != "cuda" && device != "auto")
    throw InputError("--device " + device + ": expected cpu, cuda or auto");
  auto model = InferenceModel::load(model_path, resolve_device(device, 0, 1, "--device"));
  TextSampler sampler(*model, {temperature, top_k, seed}, "'" + model_path + "'");
  std::vector<int32_t> tokens;
  try {
    tokens = sampler.encode(prompt);
  } catch (const InputError& e) {
    throw InputError(std::string("--prompt: ") + e.what());
  }
  if (tokens.empty()) throw InputError("--prompt is empty");
  std::fputs(prompt.c_str(), stdout);
  for (int64_t step = 0; step < length; ++step)
    std::fputs(sampler.token_text(sampler.next(tokens)).c_str(), stdout);
  std::fputs("\n", stdout);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return tern::run_tool("tern-generate", [&] { return run(argc, argv); });
}
