#pragma once
// Everything tern-train reads: its sections, keys and their checks.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tern/base/options.h"
#include "tern/nn/optim.h"
#include "tern/train/checkpoint.h"

namespace tern {

struct ModelConfig {
  std::vector<std::string> layers;
  std::string loss = "softmax_cross_entropy";
  int64_t input_dim = 0;  // 0: taken from the data file
};

struct DataConfig {
  std::string path;
  std::string normalize = "standard";  // standard | none
  int64_t prefetch = 4;                // batches prepared ahead per rank
  int64_t loader_threads = 0;          // copying one large batch; 0 = auto
  int64_t block_size = 0;              // token corpora: the context length
  std::string stream = "auto";         // auto | on | off: rows read from the file as needed
  int64_t stream_above_mb = 0;         // auto streams splits larger than this; 0: see the help
};

struct TrainConfig {
  int64_t steps = 1000;
  int64_t batch_size = 64;  // global, over all ranks and micro-batches
  int64_t accum_steps = 1;  // micro-batches per optimizer step
  int64_t seed = 1234;
  int64_t eval_every = 200;
  int64_t eval_batch_size = 1024;
  int64_t log_every = 10;
  std::string on_nonfinite = "error";  // error | skip
};

struct RunConfig {
  std::string dir;
  int64_t threads = 0;  // BLAS threads per rank; 0 = cores on this node / ranks on this node
  std::string log_level = "info";
  std::string progress = "auto";  // auto | on | off
  bool flush_denormals = true;
  std::string device = "auto";     // auto | cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16
  bool tf32 = false;
};

struct DistConfig {
  std::string backend = "auto";  // auto | nccl | mpi | none
  double bucket_mb = 25.0;
  bool overlap = true;
  double timeout_seconds = 600.0;
  double straggler_seconds = 0;  // 0 = timeout_seconds / 4
  int64_t zero = 0;              // 1: ZeRO-1, optimizer state sharded over the ranks
};

// Everything tern-train reads.
struct TrainerConfig {
  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  RunConfig run;
  DistConfig dist;
  CheckpointConfig checkpoint;
};

// Registers every tern-train key on `options`; call validate_trainer_config after parsing.
void register_trainer_options(OptionSet& options, TrainerConfig& cfg);
void validate_trainer_config(const OptionSet& options, const TrainerConfig& cfg);

}  // namespace tern
