// The inference runtime: an exported model run with the same layer code as training.
#include "tern/infer/inference_model.h"

#include <algorithm>

#include "tern/base/error.h"

namespace tern {

std::unique_ptr<InferenceModel> InferenceModel::load(const std::string& path, Device dev) {
  auto m = std::unique_ptr<InferenceModel>(new InferenceModel());
  m->info_ = read_export_info(path);
  m->model_ = std::make_unique<Model>(m->info_.layers, m->info_.loss, m->info_.input_shape, dev);
  // Read into host memory, then copied to where the model runs.
  Tensor host = Tensor::zeros({m->model_->num_params()});
  read_export_weights(path, m->model_->param_table(), host);
  m->model_->params().copy_from(host);
  const int64_t features = m->input_features();
  if (m->info_.normalization == "standard") {
    if (static_cast<int64_t>(m->info_.norm.mean.size()) != features ||
        static_cast<int64_t>(m->info_.norm.stddev.size()) != features)
      throw InputError("'" + path + "': normalization has " +
                       std::to_string(m->info_.norm.mean.size()) + " means for " +
                       std::to_string(features) + " features");
    for (int64_t i = 0; i < features; ++i) {
      m->mean_.push_back(static_cast<float>(m->info_.norm.mean[i]));
      const double sd = m->info_.norm.stddev[i];
      m->inv_std_.push_back(sd > 1e-12 ? static_cast<float>(1.0 / sd) : 1.0f);
    }
  } else if (m->info_.normalization != "none") {
    throw InputError("'" + path + "': unknown normalization '" + m->info_.normalization + "'");
  }
  return m;
}

std::unique_ptr<InferenceModel> InferenceModel::clone() const {
  auto m = std::unique_ptr<InferenceModel>(new InferenceModel());
  m->info_ = info_;
  m->model_ =
      std::make_unique<Model>(info_.layers, info_.loss, info_.input_shape, model_->device());
  m->model_->params().copy_from(model_->params());
  m->mean_ = mean_;
  m->inv_std_ = inv_std_;
  return m;
}

int64_t InferenceModel::vocab_size() const {
  const auto& table = model_->param_table();
  if (model_->num_layers() < 1 || std::string(model_->layer(0).type()) != "embedding" ||
      table.empty() || table.front().layer != 0 || table.front().shape.size() != 2)
    return 0;
  return table.front().shape[0];  // "0.embedding.token": [vocab, dim]
}

Tensor InferenceModel::forward_tokens(const int32_t* ids, int64_t rows) {
  if (info_.input_datatype != "INT32")
    throw InputError("this model takes " + info_.input_datatype + " features, not token ids");
  Shape shape = info_.input_shape;
  shape.insert(shape.begin(), rows);
  Tensor x = Tensor::empty(shape, DType::i32);
  std::copy_n(ids, x.numel(), x.data<int32_t>());
  // On a GPU the ids go up and the logits come back (to() is a view when already on the host).
  return model_->forward(x.to(model_->device()), StepContext{false, 0, 0, nullptr}).to(Device{});
}

void InferenceModel::predict_tokens(const int32_t* ids, int64_t rows, float* out) {
  const Tensor y = forward_tokens(ids, rows);
  std::copy_n(y.data<float>(), y.numel(), out);
}

void InferenceModel::predict_last(const int32_t* ids, const int64_t* lengths, int64_t rows,
                                  float* out) {
  const Shape& os = model_->output_shape();
  if (info_.input_shape.size() != 1 || os.size() != 2 || os[0] != info_.input_shape[0])
    throw InputError("output " + shape_str(os) + " is not one row of logits per position of " +
                     shape_str(info_.input_shape));
  const int64_t positions = os[0], vocab = os[1];
  for (int64_t r = 0; r < rows; ++r)
    if (lengths[r] < 1 || lengths[r] > positions)
      throw InputError("row " + std::to_string(r) + ": length " + std::to_string(lengths[r]) +
                       " is outside [1, " + std::to_string(positions) + "]");
  const Tensor logits = forward_tokens(ids, rows);
  const float* y = logits.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(y + (r * positions + lengths[r] - 1) * vocab, vocab, out + r * vocab);
}

void InferenceModel::predict(const float* x, int64_t rows, float* out) {
  const int64_t f = input_features();
  Shape shape = info_.input_shape;
  shape.insert(shape.begin(), rows);
  if (input_.numel() < rows * f) input_ = Tensor::empty({rows * f});
  float* in = input_.data<float>();
  if (mean_.empty()) {
    std::copy_n(x, rows * f, in);
  } else {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < f; ++c) in[r * f + c] = (x[r * f + c] - mean_[c]) * inv_std_[c];
  }
  const Tensor y =
      model_
          ->forward(input_.slice(0, shape).to(model_->device()), StepContext{false, 0, 0, nullptr})
          .to(Device{});
  std::copy_n(y.data<float>(), y.numel(), out);
}

}  // namespace tern
