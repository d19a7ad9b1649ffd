#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"

namespace tern {

// A loss turns the model's output and the targets into a summed loss and, in training, the
// gradient of the output scaled by grad_scale (1 / global batch).
class Loss {
 public:
  virtual ~Loss() = default;
  virtual const char* type() const = 0;
  virtual bool classification() const = 0;
  virtual ops::LossStats compute(const Tensor& out, const Tensor& target, Tensor* dout,
                                 float grad_scale) const = 0;
};
struct LossInfo {
  std::function<std::unique_ptr<Loss>()> make;
  std::string help;
};
const std::map<std::string, LossInfo>& loss_registry();
std::unique_ptr<Loss> make_loss(const std::string& name);

}  // namespace tern
