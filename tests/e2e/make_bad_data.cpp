// Writes HDF5 dataset files that are each wrong in one way, for tests/e2e/data_errors.sh.
#include <cmath>
#include <cstdio>
#include <string>

#include "tern/io/hdf5_file.h"

using namespace tern;

namespace {

void write(const std::string& path, int64_t features, float poison, int32_t bad_label,
           bool float_val_labels) {
  const int64_t rows = 30;
  h5::File f = h5::File::create(path);
  for (const char* split : {"train", "val"}) {
    Tensor x = Tensor::empty({rows, features});
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>(i % 17);
    Tensor y = Tensor::empty({rows}, DType::i32);
    for (int64_t i = 0; i < rows; ++i) y.data<int32_t>()[i] = static_cast<int32_t>(i % 10);
    if (std::string(split) == "train") {
      x.data<float>()[5 * features + 3] += poison;
      y.data<int32_t>()[9] += bad_label;
    }
    f.write(std::string("/") + split + "/x", x);
    if (float_val_labels && std::string(split) == "val")
      f.write("/val/y", Tensor::zeros({rows}));
    else
      f.write(std::string("/") + split + "/y", y);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tern_make_bad_data DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  write(dir + "/nan.h5", 64, NAN, 0, false);
  write(dir + "/shape.h5", 63, 0, 0, false);
  write(dir + "/label.h5", 64, 0, 1, false);
  write(dir + "/dtype.h5", 64, 0, 0, true);
  return 0;
}
