#pragma once
// `tern-data validate`: a new data file checked against a reference (a model's export or the data
// it was trained on): schema, missing and non-finite values, ranges, and per-feature drift with
// the same code the server measures live drift with (profile.h).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/io/profile.h"

namespace tern {

struct ValidationOptions {
  DriftRule rule;
  double range_margin = 0.1;             // of each feature's training range, on either side
  double max_out_of_range_share = 0.01;  // of a feature's values, before the range check fails
  double max_missing_share = 0;          // NaN and infinite values of a feature
  // The drift check fails when more than this share of the features drifted (0: any feature).
  double max_drifted_share = 0;
  std::string split = "all";  // train | val | all (the splits present)
};

// What the reference says the data should be.
struct DataReference {
  std::string path;
  std::string kind;  // "model" (an export's reference_profile) or "data" (its /train/x)
  DataProfile inputs;
  std::string x_dtype = "float32";  // of the data file; an export takes FP32
  bool has_y = false;
  std::string y_dtype;
};

// InputError (bad input: exit 2) when the file cannot be read or an export has no reference.
DataReference load_reference(const std::string& path, const ProfileOptions& profile = {});

struct ValidationReport {
  bool passed = true;
  std::vector<std::string> failures;  // each names the check, the dataset and the feature
  nlohmann::json json;                // the whole report (docs/data.md)
  std::string table;                  // the readable form
};

// InputError when `path` is no HDF5 file; everything wrong inside it is a failed check.
ValidationReport validate_data(const DataReference& reference, const std::string& path,
                               const ValidationOptions& options);

}  // namespace tern
