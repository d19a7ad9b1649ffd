#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/data.h"
#include "tern/model.h"

// The export format (DESIGN.md section 6): model.h5, readable with h5py.
//   /layers/<index>.<type>/<param>   one group per layer with its weights, float32
//   root attributes (JSON text where structured):
//     format = "tern-model/1", model_spec (layers, loss), input_schema (name, shape, dtype),
//     outputs (name, shape, dtype, labels), normalization (kind, mean, std),
//     feature_stats (mean, std, min, max of the training inputs), lineage (dataset path and
//     checksum, config, config hash, code version, step, final metrics)
namespace tern {

struct ExportInfo {
  std::vector<std::string> layers;
  std::string loss;
  Shape input_shape;
  std::string input_name = "input";
  std::string input_datatype = "FP32";  // INT32 for token ids (language models)
  std::string output_name;              // "logits" for classification, "output" for regression
  std::vector<std::string> labels;      // class names, when known
  std::string normalization = "none";   // standard | none
  FeatureStats norm;                    // mean/std applied before the first layer (standard)
  FeatureStats feature_stats;           // of the training inputs, for drift monitoring
  nlohmann::json lineage = nlohmann::json::object();
};

// ExportInfo as JSON (kept in checkpoint manifests, so any checkpoint can be exported) and back.
nlohmann::json export_info_to_json(const ExportInfo& info);
ExportInfo export_info_from_json(const nlohmann::json& j, const std::string& where);

// Writes model.h5 atomically (a temp file renamed into place).
void write_export(const std::string& path, const ExportInfo& info,
                  const std::vector<ParamInfo>& table, const Tensor& params);

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
