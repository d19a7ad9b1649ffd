#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tern/compute/tensor.h"
#include "tern/io/dataset.h"
#include "tern/io/hdf5_file.h"

namespace tern {

// One split of a data file read as it is used, for data sets larger than memory: each row comes
// from the file when a batch needs it, at its offset, with pread() (any thread, no lock, nothing
// of the split held). That needs rows stored uncompressed as f32 features and i32 labels (or f32
// targets), contiguous or in chunks of whole rows: what `tern-data synth` writes, and
// (RowLayout). Other files stream too, through the HDF5 library one
// row at a time behind a lock, which is slow (each row of a compressed chunk inflates the chunk):
// a warning says so.
class StreamedRows {
 public:
  // Opens /<split>/x and /<split>/y, checked against `expect` as Dataset::load checks them
  // (types and shapes here; values in scan()). InputError naming the file and dataset otherwise.
  static std::shared_ptr<StreamedRows> open(const std::string& path, const std::string& split,
                                            const DataExpectation& expect);
  ~StreamedRows();
  StreamedRows(const StreamedRows&) = delete;
  StreamedRows& operator=(const StreamedRows&) = delete;

  int64_t rows() const { return rows_; }
  int64_t features() const { return features_; }     // per row, all dimensions after the first
  const Shape& x_shape() const { return x_shape_; }  // [rows, features...]
  const Shape& y_shape() const { return y_shape_; }  // [rows] or [rows, targets]
  DType y_dtype() const { return y_dtype_; }
  bool direct() const { return x_layout_.direct && y_layout_.direct; }
  const std::string& why_not_direct() const;

  // Rows ids[0, n) into x (f32, n rows of features) and y (n rows), normalised when set.
  void read(const int64_t* ids, int64_t n, float* x, void* y) const;
  // Rows [begin, begin + n), as tensors.
  std::pair<Tensor, Tensor> rows(int64_t begin, int64_t n) const;

  // One pass over the split in row order, a block of rows at a time (memory: one block): the
  // checks of Dataset::load (finite features and targets, labels inside [0, classes)), the
  // content checksum of x and y (content_checksum's, as if the split were in memory), and with
  // `stats` a second pass for the feature statistics (the same sums in the same order as
  // feature_stats, so the normalisation is the in-memory one bit for bit).
  struct Scan {
    std::string checksum;
    FeatureStats stats;
  };
  Scan scan(bool stats) const;
  // Features normalised as normalize_inputs does, on every read.
  void normalize(const FeatureStats& stats);
  // At most max_rows rows, evenly spaced over the split, raw: the export's reference profile.
  Tensor sample_x(int64_t max_rows) const;

 private:
  StreamedRows() = default;
  void read_row(int64_t id, float* x, char* y) const;
  std::string path_, split_;
  int64_t rows_ = 0, features_ = 0, y_row_bytes_ = 0;
  Shape x_shape_, y_shape_;
  DType y_dtype_ = DType::i32;
  DataExpectation expect_;
  h5::RowLayout x_layout_, y_layout_;
  int fd_ = -1;
  // The HDF5 library, for scans and for files whose rows cannot be read directly (under
  // hdf5_mutex(): the library is not thread-safe, and the splits are read from several threads).
  std::unique_ptr<h5::File> file_;
  std::vector<float> mean_, inv_;  // empty: not normalised
};

// A token split (/train/tokens, /val/tokens: int32, 1-D) read as it is used: each window of the
// loader is one or two pread()s (a window may straddle two chunks), or, for files whose tokens
// cannot be addressed, reads through the HDF5 library behind a lock.
class StreamedTokens {
 public:
  // InputError unless `dataset` is a 1-D integer dataset of `path`.
  static std::shared_ptr<StreamedTokens> open(const std::string& path, const std::string& dataset);
  ~StreamedTokens();
  StreamedTokens(const StreamedTokens&) = delete;
  StreamedTokens& operator=(const StreamedTokens&) = delete;

  int64_t size() const { return layout_.rows; }
  bool direct() const { return layout_.direct; }
  // Tokens [start, start + n) into out.
  void read(int64_t start, int64_t n, int32_t* out) const;
  // One pass in order, a block at a time: every id inside [0, vocab) (the first bad position is
  // named, as TokenCorpus::load names it), and the content checksum of the tokens.
  std::string scan(int64_t vocab) const;

 private:
  StreamedTokens() = default;
  std::string path_, dataset_;
  h5::RowLayout layout_;
  int fd_ = -1;
  std::unique_ptr<h5::File> file_;  // under hdf5_mutex()
};

}  // namespace tern
