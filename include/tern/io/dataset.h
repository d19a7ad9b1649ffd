#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tern/base/worker.h"
#include "tern/compute/tensor.h"

namespace tern {
namespace h5 {
class File;
}
class StreamedRows;
class StreamedTokens;

// One split of a dataset, in memory: x f32 [rows, features...], y i32 [rows] (classes) or
// f32 [rows, targets] (regression).
// A split is either rows (x, y), or a token stream read as windows: with block > 0, sample s is
// the window starting at token s, x = tokens[s, s + block) and y = tokens[s + 1, s + block + 1]
// (next-token targets), so there are tokens - block samples.
// Or the rows stay in the file and are read as batches need them (`stream`, data sets larger
// than memory; x and y are then empty).
struct Split {
  std::string name;  // "train" or "val"
  Tensor x, y;
  std::shared_ptr<const StreamedRows> stream;
  Tensor tokens;  // i32 [n], when block > 0 (or, streamed, token_stream)
  std::shared_ptr<const StreamedTokens> token_stream;
  int64_t block = 0;  // window length (the model's context)
  int64_t rows() const;
  int64_t num_tokens() const;  // token splits: the stream's length
  // Rows [begin, begin + n) of x and y, from memory (views) or from the file.
  std::pair<Tensor, Tensor> rows_at(int64_t begin, int64_t n) const;
  // The window starting at token `start` into x and its next tokens into y (block ids each).
  void window(int64_t start, int32_t* x, int32_t* y) const;
};

// Windows of `block` tokens (and their next tokens) over an i32 token stream.
Split token_windows(std::string name, Tensor tokens, int64_t block);

// A character-level token corpus, the layout `tern-data text` writes: /train/tokens and
// /val/tokens (i32), and the root attribute "vocab", a JSON list of the characters (UTF-8 strings)
// by token id.
struct TokenCorpus {
  std::vector<std::string> vocab;
  Tensor train, val;  // i32 [n]
  static bool is_token_file(const std::string& path);
  // The root attribute vocab, checked (a non-empty JSON list of strings).
  static std::vector<std::string> vocab_of(const std::string& path);
  // Loads and validates (every id inside the vocabulary; the first bad position is named).
  static TokenCorpus load(const std::string& path);
};

// The characters (Unicode code points, each as its UTF-8 bytes) of a UTF-8 text. Invalid UTF-8 is
// an InputError naming the byte offset.
std::vector<std::string> utf8_characters(const std::string& text);

// Per-feature statistics of the training inputs: the normalisation, and what an export carries
// for drift monitoring.
struct FeatureStats {
  std::vector<double> mean, stddev, min, max;
};
FeatureStats feature_stats(const Tensor& x);

// feature_stats over a split read a block of rows at a time: the sums of every block in row
// order, end_sums(), then the squared deviations of every block in the same order, finish().
// The same operations in the same order, so the same numbers bit for bit.
class FeatureStatsPass {
 public:
  explicit FeatureStatsPass(int64_t cols);
  void add_sums(const float* rows_data, int64_t rows);
  void end_sums();
  void add_squares(const float* rows_data, int64_t rows);
  FeatureStats finish();

 private:
  int64_t cols_, rows_ = 0;
  FeatureStats s_;
};

// What the model expects of a data file.
struct DataExpectation {
  int64_t input_dim = 0;  // 0: any
  bool classification = true;
  int64_t classes = 0;     // labels must lie in [0, classes)
  int64_t target_dim = 0;  // regression targets per row
};

// Dataset::load's checks, shared with streamed splits (row_stream.h): the schema of /<name>/x and
// /<name>/y against the model before any value is read, then the values of a block of rows that
// starts at row `first` (finite features and targets, labels inside [0, classes)). InputError
// naming the file, the dataset and the first bad row.
struct SplitSchema {
  int64_t rows = 0, features = 0;
  Shape x_dims, y_dims;  // y: [rows] labels or [rows, targets]
};
SplitSchema check_split_schema(const h5::File& file, const std::string& name,
                               const DataExpectation& expect);
void check_split_values(const std::string& path, const std::string& name,
                        const DataExpectation& expect, const Tensor& x, const Tensor& y,
                        int64_t first);

// The layout tern-data writes: /train/x, /train/y and optionally /val/x, /val/y.
struct Dataset {
  std::string path;
  Split train, val;
  bool has_val = false;
  std::vector<std::string> feature_names;  // the root attribute feature_names; may be empty
  // The number of input features, read from /train/x without loading it.
  static int64_t input_dim_of(const std::string& path);
  // Loads and validates both splits; a violation is an InputError naming the dataset and the
  // first bad row.
  static Dataset load(const std::string& path, const DataExpectation& expect);
};

// The root attribute feature_names of a data file (a JSON list); empty when it has none.
std::vector<std::string> feature_names_of(const h5::File& file);

// x = (x - mean) / std per feature (a std of zero counts as one).
void normalize_inputs(Split& split, const FeatureStats& stats);

// The global sample order: position p of the training stream is sample
// permutation(seed, p / n)[p % n]. It depends on (seed, epoch) alone, never on the number of
// ranks, which is what makes resuming on another number of ranks exact.
class Sampler {
 public:
  Sampler(int64_t rows, uint64_t seed) : rows_(rows), seed_(seed) {}
  int64_t sample_at(int64_t position);
  // Valid until the next call: two epochs are cached, since a batch can straddle an epoch end.
  const std::vector<int64_t>& permutation(int64_t epoch);

 private:
  int64_t rows_;
  uint64_t seed_;
  std::map<int64_t, std::vector<int64_t>> cache_;  // at most two epochs
};

// [begin, end) of `total` items owned by `part` of `parts`; parts differ by at most one item.
std::pair<int64_t, int64_t> even_share(int64_t total, int64_t part, int64_t parts);

// One rank's rows of one micro-batch. Row i is global sample first_sample + i of the stream.
struct Batch {
  int64_t step = 0;
  int64_t micro = 0;
  int64_t first_sample = 0;
  Tensor x, y;
};

// Gives this rank its slice of every global batch, micro-batch by micro-batch, prepared on a
// background thread `prefetch` batches ahead. Global batch s is stream positions
// [P + (s - s0)*B, P + (s - s0 + 1)*B), where s0 is the first step and P its stream position
// (s0*B for a run that never changed its batch size); micro-batch m of A is its m-th even share;
// rank r takes the r-th even share of that.
class Loader {
 public:
  struct Options {
    int64_t batch_size = 1, accum_steps = 1, rank = 0, world = 1, prefetch = 4;
    int64_t start_step = 0;
    uint64_t seed = 0;
    int64_t start_position = 0;  // stream position of start_step's batch
    // Makes the batch tensors (default: Tensor::empty). Training on a GPU passes pinned memory,
    // so batches go to the device without another copy.
    std::function<Tensor(const Shape&, DType)> allocate;
    // Threads that copy the rows of one batch when it is large (the copy of a 64 MB batch of
    // random rows takes one core several milliseconds: as long as a GPU step).
    int64_t threads = 1;
  };
  Loader(const Split& split, Options opt);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  Batch next();

 private:
  void prefetch_loop();
  Batch make(int64_t step, int64_t micro);

  const Split& split_;
  Options opt_;
  Sampler sampler_;
  // Under worker_'s lock: the batches made ahead, or the error that stopped the prefetch.
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  BackgroundWorker worker_;  // last: stopped before the members it uses go
};

}  // namespace tern
