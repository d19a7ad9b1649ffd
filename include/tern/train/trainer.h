#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tern/compute/device.h"
#include "tern/dist/grad_reducer.h"
#include "tern/dist/param_gather.h"
#include "tern/infer/export.h"
#include "tern/io/dataset.h"
#include "tern/nn/model.h"
#include "tern/nn/optim.h"
#include "tern/train/checkpoint.h"
#include "tern/train/run_log.h"
#include "tern/train/train_config.h"

namespace tern {

struct EvalResult {
  double loss = 0;
  double accuracy = 0;  // classification only
  int64_t rows = 0;
};

struct TrainResult {
  int64_t steps = 0;
  double train_loss = 0;  // mean over the last logging interval
  EvalResult val;
  std::string param_checksum;
  double samples_per_sec = 0;
  bool preempted = false;  // stopped early by a signal or spot notice: exit 75, requeue
};

// The training loop of DESIGN.md section 4 on one rank: every rank runs it with its own
// communicator; parameters stay identical because every rank applies the same averaged update.
class Trainer {
 public:
  // effective_ini is written to <run.dir>/config.ini by rank 0. local_rank (this rank's index on
  // its node, of local_world) picks the GPU when run.device asks for one.
  Trainer(TrainerConfig cfg, Communicator& comm, std::string effective_ini = "", int local_rank = 0,
          int local_world = 1);
  ~Trainer();
  TrainResult run();
  EvalResult evaluate();
  DataProfile prediction_profile();
  Model& model() { return *model_; }
  const Dataset& dataset() const { return data_; }
  Device device() const { return device_; }

 private:
  void log_progress(int64_t step, double loss, float lr, double samples_per_sec, bool final);
  TrainResult finish(TrainResult result, int64_t step, double wall);
  void describe_export();
  void load_rows(DType compute);
  void load_tokens(DType compute);
  // The batch on the training device (queued through the uploader on a GPU).
  std::pair<Tensor, Tensor> on_device(const Tensor& x, const Tensor& y);
  double optimizer_state_mb() const;
  bool stream_data(double split_mb);
  void on_root_then_share(const std::function<void()>& work);
  static int64_t profile_rows(int64_t cols);
  void load_streamed(const DataExpectation& expect);
  void load_streamed_tokens(int64_t vocab, int64_t T);
  void share_from_root(std::string& text);

  TrainerConfig cfg_;
  Communicator& comm_;
  std::string effective_ini_;
  Dataset data_;
  FeatureStats stats_;
  int local_world_ = 1;        // ranks on this node
  std::string data_checksum_;  // of the raw training rows (x, then y), for the lineage
  ExportInfo export_info_;     // model.h5's description, also kept in every checkpoint
  Device device_;
  std::unique_ptr<BatchUploader> uploader_;
  std::unique_ptr<Communicator> grad_comm_;  // NCCL on a GPU; else the reducer uses comm_
  std::unique_ptr<Model> model_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<GradReducer> reducer_;
  // ZeRO-1 (dist.zero=1): this rank's slice of the flat buffers, its reduced gradients and the
  // all-gather of the updated parameters.
  std::optional<FlatSharding> sharding_;
  Tensor shard_grads_;
  std::unique_ptr<ParamGather> gather_;
  std::unique_ptr<CheckpointManager> ckpt_;
  TrainingPosition start_;  // where this run begins: 0, or the resumed checkpoint
  RunLog log_;
  Clock::time_point start_time_;
  int64_t start_step_ = 0;
  int64_t positions_ = 1;           // predictions per sample: T for a language model
  std::vector<std::string> vocab_;  // token corpora: the characters by id
  bool progress_line_ = false;
};

}  // namespace tern
