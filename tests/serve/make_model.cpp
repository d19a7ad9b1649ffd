// Writes a small exported model for the serving tests: an MLP with random weights from a seed,
// so each version's answers differ and a test can tell which version answered.
//   tern_serve_make_model OUT.h5 [features=4] [classes=3] [seed=1] [hidden=8] [nan]
// "nan" poisons the last bias, so the file opens but fails the server's warm-up check.
#include <cmath>
#include <cstdio>
#include <string>

#include "tern/infer/export.h"

int main(int argc, char** argv) {
  using namespace tern;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.h5 [features] [classes] [seed] [hidden] [nan]\n", argv[0]);
    return 2;
  }
  auto arg = [&](int i, int64_t fallback) { return argc > i ? std::stoll(argv[i]) : fallback; };
  const int64_t features = arg(2, 4), classes = arg(3, 3), seed = arg(4, 1), hidden = arg(5, 8);
  const bool poison = argc > 6 && std::string(argv[6]) == "nan";

  ExportInfo info;
  info.layers = {"linear out=" + std::to_string(hidden), "relu",
                 "linear out=" + std::to_string(classes)};
  info.loss = "softmax_cross_entropy";
  info.input_shape = {features};
  info.output_name = "logits";
  for (int64_t c = 0; c < classes; ++c) info.labels.push_back("class" + std::to_string(c));
  info.lineage = {{"made_by", "tern_serve_make_model"}, {"seed", seed}};
  Model model(info.layers, info.loss, info.input_shape);
  model.init_params(static_cast<uint64_t>(seed));
  float* p = model.params().data<float>();
  if (poison) {
    const ParamInfo& last = model.param_table().back();  // the flat buffer may be padded after it
    p[last.offset + shape_numel(last.shape) - 1] = std::nanf("");
  }
  write_export(argv[1], info, model.param_table(), model.params());
  return 0;
}
