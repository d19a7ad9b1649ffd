#include "tern/nn/losses.h"
#include "tern/base/error.h"
#include "tern/nn/layers.h"

namespace tern {
namespace {

class SoftmaxCrossEntropy final : public Loss {
 public:
  const char* type() const override { return "softmax_cross_entropy"; }
  bool classification() const override { return true; }
  ops::LossStats compute(const Tensor& out, const Tensor& target, Tensor* dout,
                         float grad_scale) const override {
    // A sequence output [rows, positions, classes] is rows x positions predictions.
    const int64_t classes = out.dim(-1), n = out.numel() / classes;
    Tensor d = dout ? dout->reshape({n, classes}) : Tensor();
    return ops::softmax_cross_entropy(out.reshape({n, classes}), target.reshape({n}),
                                      dout ? &d : nullptr, grad_scale);
  }
};

class MeanSquaredError final : public Loss {
 public:
  const char* type() const override { return "mse"; }
  bool classification() const override { return false; }
  ops::LossStats compute(const Tensor& out, const Tensor& target, Tensor* dout,
                         float grad_scale) const override {
    return ops::mean_squared_error(out, target.reshape(out.shape()), dout, grad_scale);
  }
};

}  // namespace

const std::map<std::string, LossInfo>& loss_registry() {
  static const std::map<std::string, LossInfo> registry = {
      {"softmax_cross_entropy",
       {[] { return std::make_unique<SoftmaxCrossEntropy>(); },
        "classification; labels are integers in [0, classes)"}},
      {"mse",
       {[] { return std::make_unique<MeanSquaredError>(); },
        "regression; mean squared error over the outputs"}},
  };
  return registry;
}

std::unique_ptr<Loss> make_loss(const std::string& name) {
  const auto& reg = loss_registry();
  auto it = reg.find(name);
  if (it == reg.end()) {
    std::string known;
    for (const auto& [n, info] : reg) known += (known.empty() ? "" : ", ") + n;
    throw InputError("model.loss: unknown loss '" + name + "' (known: " + known + ")");
  }
  return it->second.make();
}

}  // namespace tern
