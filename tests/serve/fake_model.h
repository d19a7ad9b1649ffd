#pragma once
// A fake model file format for the server's tests, so that no HDF5 export is needed: a file
// holding "FEATURES OUTPUTS OFFSET" loads as a model whose answer is sum(row) + OFFSET + column;
// anything else fails to load.
#include <fstream>
#include <string>

#include "tern/base/error.h"
#include "tern/serve/repository.h"

namespace tern::serve {

inline LoadedModel fake_loader(const std::string& path, int64_t instances, int64_t) {
  std::ifstream in(path);
  int64_t features = 0, outputs = 0;
  float offset = 0;
  if (!(in >> features >> outputs >> offset)) throw InputError("'" + path + "': not a model");
  LoadedModel m;
  m.schema.input_shape = {features};
  m.schema.output_name = "y";
  m.schema.output_features = outputs;
  for (int64_t i = 0; i < instances; ++i)
    m.instances.push_back([=](const InputRows& in, int64_t rows, float* out) {
      const float* x = in.features.data();
      for (int64_t r = 0; r < rows; ++r) {
        float sum = offset;
        for (int64_t f = 0; f < features; ++f) sum += x[r * features + f];
        for (int64_t c = 0; c < outputs; ++c) out[r * outputs + c] = sum + static_cast<float>(c);
      }
    });
  return m;
}

}  // namespace tern::serve
