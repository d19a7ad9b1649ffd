// tern-generate: samples text from an exported character-level language model (model.h5 of a
// tern-train run on a token corpus), one character at a time.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <random>

#include <boost/program_options.hpp>

#include "tern/data.h"
#include "tern/device.h"
#include "tern/error.h"
#include "tern/export.h"
#include "tern/version.h"

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
  const ExportInfo& info = model->info();
  if (info.input_datatype != "INT32" || info.input_shape.size() != 1)
    throw InputError("'" + model_path + "' is not a language model (its input is " +
                     info.input_datatype + " " + shape_str(info.input_shape) + ")");
  const int64_t T = info.input_shape[0];
  const std::vector<std::string>& vocab = info.labels;
  const int64_t V = static_cast<int64_t>(vocab.size());
  if (V != model->output_features() / T)
    throw InputError("'" + model_path + "': " + std::to_string(V) + " labels for " +
                     std::to_string(model->output_features() / T) + " outputs per position");
  std::map<std::string, int32_t> id;
  for (int64_t i = 0; i < V; ++i) id[vocab[i]] = static_cast<int32_t>(i);

  std::vector<int32_t> tokens;
  for (const std::string& ch : utf8_characters(prompt)) {
    auto it = id.find(ch);
    if (it == id.end())
      throw InputError("--prompt: character '" + ch + "' is not in the model's vocabulary");
    tokens.push_back(it->second);
  }
  if (tokens.empty()) throw InputError("--prompt is empty");

  std::mt19937_64 rng(seed);
  std::vector<int32_t> window(T);
  std::vector<float> logits(T * V);
  std::vector<double> p(V);
  std::vector<int64_t> order(V);
  std::fputs(prompt.c_str(), stdout);
  for (int64_t step = 0; step < length; ++step) {
    // The last T tokens, left-aligned: causal attention means later (padding) positions do not
    // change the prediction at position n - 1.
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(tokens.size()), T);
    std::fill(window.begin(), window.end(), 0);
    std::copy(tokens.end() - n, tokens.end(), window.begin());
    model->predict_tokens(window.data(), 1, logits.data());
    const float* z = logits.data() + (n - 1) * V;
    for (int64_t i = 0; i < V; ++i) order[i] = i;
    const int64_t k = top_k > 0 ? std::min(top_k, V) : V;
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int64_t a, int64_t b) { return z[a] > z[b]; });
    const double zmax = z[order[0]];
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += (p[i] = std::exp((z[order[i]] - zmax) / temperature));
    double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
    int64_t pick = k - 1;
    for (int64_t i = 0; i < k; ++i)
      if ((u -= p[i]) < 0) {
        pick = i;
        break;
      }
    const int32_t next = static_cast<int32_t>(order[pick]);
    tokens.push_back(next);
    std::fputs(vocab[next].c_str(), stdout);
  }
  std::fputs("\n", stdout);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const InputError& e) {
    std::fprintf(stderr, "tern-generate: error: %s\n", e.what());
    return kExitUsage;
  } catch (const po::error& e) {
    std::fprintf(stderr, "tern-generate: error: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern-generate: error: %s\n", e.what());
    return kExitError;
  }
}
