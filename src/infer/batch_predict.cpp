// Offline batch prediction over HDF5 files (tern-predict): the input's checks, the output file.
#include "tern/infer/batch_predict.h"

#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "tern/base/error.h"

namespace tern {

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

namespace {
int64_t argmax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;
  return best;
}
}  // namespace

void write_predictions(const PredictionFiles& opt, const std::string& dataset,
                       const InferenceModel& model, const Tensor& predictions, bool classifier,
                       const std::string& created_by) {
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
    f.write_attr("/", "created_by", created_by);
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

void check_prediction_output(const PredictionFiles& opt) {
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

}  // namespace tern
