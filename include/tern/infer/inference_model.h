#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tern/infer/export.h"
#include "tern/nn/model.h"

namespace tern {

// A loaded export, ready for inference with the same layer code as training.
class InferenceModel {
 public:
  // Validates the file (format, spec, every tensor's shape) and builds the model; InputError
  // naming the file and what is wrong otherwise.
  // dev: where it runs (the CPU by default; a GPU for tern-generate --device cuda).
  static std::unique_ptr<InferenceModel> load(const std::string& path, Device dev = {});
  // An independent copy (own activation buffers) for another worker thread.
  std::unique_ptr<InferenceModel> clone() const;

  const ExportInfo& info() const { return info_; }
  int64_t input_features() const { return shape_numel(info_.input_shape); }
  int64_t output_features() const { return shape_numel(model_->output_shape()); }
  int64_t parameter_bytes() const { return model_->num_params() * 4; }  // f32 weights
  bool classification() const { return model_->loss_fn().classification(); }
  // Of one row: [positions, vocab] for a language model.
  const Shape& output_shape() const { return model_->output_shape(); }
  // The number of token ids the first layer takes (its embedding table's rows); 0 when the first
  // layer is no embedding.
  int64_t vocab_size() const;
  // out[rows, outputs] = model(normalize(x[rows, features])); not thread-safe (use clone()).
  void predict(const float* x, int64_t rows, float* out);
  // Language models (INT32 input): out[rows, positions, vocab] = model(ids[rows, positions]).
  void predict_tokens(const int32_t* ids, int64_t rows, float* out);
  // Language models with per-position outputs [positions, vocab]: out[rows, vocab] = the logits
  // of row r at position lengths[r] - 1, i.e. of the token after its first lengths[r] ids. Rows
  // shorter than the context are right-padded (any valid id): in a causal model a position does
  // not see later ones, so the padding does not change these logits.
  void predict_last(const int32_t* ids, const int64_t* lengths, int64_t rows, float* out);

 private:
  InferenceModel() = default;
  // The model's output for ids [rows, positions], on the host.
  Tensor forward_tokens(const int32_t* ids, int64_t rows);
  ExportInfo info_;
  std::unique_ptr<Model> model_;
  std::vector<float> mean_, inv_std_;
  Tensor input_;  // normalised copy of the batch
};

}  // namespace tern
