#pragma once
// Importers into tern's HDF5 dataset layout (docs/data.md), as tern-data runs them. Bad input is
// an InputError naming the file, line and column, or the option.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tern {

struct ImportSummary {
  int64_t rows = 0, features = 0, train_rows = 0, val_rows = 0;
};

// A CSV table -> /train/x, /train/y, /val/x, /val/y, split by a seeded shuffle.
struct CsvImport {
  std::string input, output;
  std::string label_column = "-1";      // index (negative counts from the end) or header name
  std::string header = "auto";          // auto | yes | no
  std::string task = "classification";  // classification (integer labels) | regression
  double val_fraction = 0.2;
  uint64_t seed = 0;
  std::string created_by;
};
ImportSummary import_csv(const CsvImport& job);

// Gaussian blobs around one random centre per class: learnable, and cheap to make.
struct SyntheticImport {
  std::string output;
  int64_t rows = 10000, features = 784, classes = 10;
  int64_t bytes = 0;  // > 0: as many rows as fit in this many bytes of features and labels
  double val_fraction = 0.1;
  uint64_t seed = 0;
  std::string created_by;
};
struct SyntheticSummary {
  int64_t train_rows = 0, val_rows = 0, bytes = 0;
};
// Gaussian blobs, one per class; written a block at a time (any size, bounded memory) into
// chunked uncompressed datasets that StreamedRows reads directly.
SyntheticSummary import_synthetic(const SyntheticImport& job);

// UTF-8 text -> character tokens (/train/tokens, /val/tokens: the last share, contiguous) and
// the vocabulary (distinct characters in code point order).
struct TextImport {
  std::string input, output;
  double val_fraction = 0.1;
  std::string created_by;
};
struct TextSummary {
  int64_t characters = 0;
  size_t vocabulary = 0;
  int64_t train_tokens = 0, val_tokens = 0;
};
TextSummary import_text(const TextImport& job);

// The request log of tern-serve (JSON lines: answered requests, and the feedback they were given)
// into a data set: the live data to retrain on. labels: "feedback" keeps the rows whose ground
// truth came back, "predicted" labels every row with the model's own answer.
struct RequestLogImport {
  std::vector<std::string> inputs;  // log files (rotated ones too), any order
  std::string output;
  std::string model;                // only this model's requests; empty: every model
  std::string labels = "feedback";  // feedback | predicted
  std::string task = "classification";
  double val_fraction = 0.0;
  uint64_t seed = 0;
  std::string created_by;
};
struct RequestLogSummary {
  int64_t requests = 0, rows = 0, labelled = 0, features = 0;
};
RequestLogSummary import_request_log(const RequestLogImport& job);

}  // namespace tern
