#pragma once
// Offline batch prediction over HDF5 files, as tern-predict runs it on each rank: which dataset
// to read, its checks against the model, and the output file.
#include <cstdint>
#include <string>

#include "tern/infer/inference_model.h"
#include "tern/io/hdf5_file.h"

namespace tern {

struct PredictionFiles {
  std::string model, input, dataset, output;
  int64_t batch_size = 1024, threads = 0;
};

// The input dataset: the requested one, else /x when the file has it, else /val/x.
std::string pick_dataset(const h5::File& f, const std::string& requested);
// Checks the dataset is float [rows, features...] with the model's width; returns the rows.
int64_t check_input(const h5::File& f, const std::string& dataset, const InferenceModel& model,
                    const std::string& model_path);
// Fails early (InputError naming --output) for an output the run could not write at the end.
void check_prediction_output(const PredictionFiles& files);
// Writes /predictions (and /classes for a classifier) with the lineage attributes, atomically.
void write_predictions(const PredictionFiles& files, const std::string& dataset,
                       const InferenceModel& model, const Tensor& predictions, bool classifier,
                       const std::string& created_by);

}  // namespace tern
