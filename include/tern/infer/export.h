#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/io/dataset.h"
#include "tern/io/profile.h"
#include "tern/nn/model.h"

// The export format (DESIGN.md section 6): model.h5, readable with h5py.
//   /layers/<index>.<type>/<param>   one group per layer with its weights, float32
//   root attributes (JSON text where structured):
//     format = "tern-model/1", model_spec (layers, loss), input_schema (name, shape, dtype),
//     outputs (name, shape, dtype, labels), normalization (kind, mean, std),
//     feature_stats (mean, std, min, max of the training inputs), reference_profile (the
//     distributions drift is measured against: {"inputs": the training split's columns,
//     "predictions": the model's outputs on the validation split}; absent in older exports),
//     lineage (dataset path and checksum, config, config hash, code version, step, final metrics)
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
  DataProfile input_profile;            // of the training split (raw inputs); empty: none
  DataProfile prediction_profile;       // of the outputs on the validation split; empty: none
  nlohmann::json lineage = nlohmann::json::object();
};

// ExportInfo as JSON (kept in checkpoint manifests, so any checkpoint can be exported) and back.
nlohmann::json export_info_to_json(const ExportInfo& info);
ExportInfo export_info_from_json(const nlohmann::json& j, const std::string& where);

// Writes model.h5 atomically (a temp file renamed into place).
void write_export(const std::string& path, const ExportInfo& info,
                  const std::vector<ParamInfo>& table, const Tensor& params);

// The description of model.h5 at `path` (InputError naming the file and what is wrong).
ExportInfo read_export_info(const std::string& path);
// Its weights into params (host, f32) at the offsets of the model spec's parameter table.
void read_export_weights(const std::string& path, const std::vector<ParamInfo>& table,
                         Tensor& params);

}  // namespace tern
