#pragma once
// The layer types built in files of their own, for the registry in layers.cpp.
#include <memory>

#include "tern/nn/layers.h"

namespace tern {

std::unique_ptr<Layer> make_batchnorm(LayerSpec& spec, const Shape& in);
std::unique_ptr<Layer> make_conv2d(LayerSpec& spec, const Shape& in);
std::unique_ptr<Layer> make_pool2d(ops::Pool pool, LayerSpec& spec, const Shape& in);

}  // namespace tern
