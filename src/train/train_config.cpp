#include "tern/train/train_config.h"

#include <cstdio>

#include "tern/base/error.h"
#include "tern/io/store.h"
#include "tern/nn/layers.h"
#include "tern/nn/losses.h"

namespace tern {

void register_trainer_options(OptionSet& o, TrainerConfig& c) {
  std::string types = "Layer types (model.layer = TYPE [key=value ...]):\n";
  for (const auto& [name, info] : layer_registry()) types += "  " + name + " " + info.help + "\n";
  types += "\nLosses (model.loss):\n";
  for (const auto& [name, info] : loss_registry()) types += "  " + name + ": " + info.help + "\n";
  o.set_epilog(types);
  o.add_list("model.layer", &c.model.layers,
             "a layer, in order: TYPE [key=value ...]; repeat the key for each layer");
  o.add("model.loss", &c.model.loss, "loss: softmax_cross_entropy | mse");
  o.add("model.input_dim", &c.model.input_dim, "input features; 0 takes them from the data file");

  o.add("data.path", &c.data.path,
        "HDF5 file with /train/x, /train/y and optionally /val/x, /val/y");
  o.add("data.normalize", &c.data.normalize,
        "input normalisation: standard (per-feature mean/std of the training split) | none");
  o.add("data.prefetch", &c.data.prefetch, "batches each rank's loader prepares ahead");
  o.add("data.block_size", &c.data.block_size,
        "token corpora (tern-data text): the context length T; a sample is T tokens and the T "
        "that follow them one position later");
  o.add("data.loader_threads", &c.data.loader_threads,
        "threads that copy the rows of one large batch (over 4 MiB); 0 = up to 4, as the cores "
        "allow");

  o.add("data.stream", &c.data.stream,
        "rows: on reads each batch's rows from the file as it is made (data larger than memory); "
        "off loads the splits into memory; auto streams when the training split is larger than "
        "data.stream_above_mb");
  o.add("data.stream_above_mb", &c.data.stream_above_mb,
        "data.stream=auto's threshold in MB; 0 = a quarter of this node's memory divided by the "
        "ranks on it");

  o.add("optim.name", &c.optim.name, "optimizer: adamw | sgd");
  o.add("optim.lr", &c.optim.lr, "peak learning rate");
  o.add("optim.weight_decay", &c.optim.weight_decay,
        "weight decay (not applied to biases and norms)");
  o.add("optim.beta1", &c.optim.beta1, "AdamW first-moment decay");
  o.add("optim.beta2", &c.optim.beta2, "AdamW second-moment decay");
  o.add("optim.eps", &c.optim.eps, "AdamW epsilon");
  o.add("optim.momentum", &c.optim.momentum, "SGD momentum");
  o.add("optim.nesterov", &c.optim.nesterov, "SGD Nesterov momentum");
  o.add("optim.schedule", &c.optim.schedule,
        "learning-rate decay after warmup: cosine | linear | constant");
  o.add("optim.warmup_steps", &c.optim.warmup_steps, "linear warmup steps");
  o.add("optim.min_lr_ratio", &c.optim.min_lr_ratio,
        "final learning rate as a fraction of optim.lr");
  o.add("optim.clip_norm", &c.optim.clip_norm, "clip the global gradient norm to this; 0 = off");

  o.add("train.steps", &c.train.steps, "optimizer steps in all");
  o.add("train.batch_size", &c.train.batch_size, "global batch (all ranks, all micro-batches)");
  o.add("train.accum_steps", &c.train.accum_steps, "micro-batches accumulated per optimizer step");
  o.add("train.seed", &c.train.seed, "seed of initialisation, data order and dropout");
  o.add("train.eval_every", &c.train.eval_every,
        "evaluate on the validation split every N steps; 0 = only at the end");
  o.add("train.eval_batch_size", &c.train.eval_batch_size,
        "rows per evaluation batch on each rank");
  o.add("train.log_every", &c.train.log_every, "write a metrics record every N steps");
  o.add("train.on_nonfinite", &c.train.on_nonfinite,
        "a NaN/Inf loss: error (stop, exit 1) | skip (drop the step)");

  o.add("run.dir", &c.run.dir, "output folder: metrics.jsonl, config.ini; empty = no files");
  o.add("run.threads", &c.run.threads,
        "CPU threads per rank (GEMMs, attention, norms, optimizer); 0 = cores of the node / "
        "ranks on the node");
  o.add("run.log_level", &c.run.log_level, "rank 0's log level: debug | info | warn | error");
  o.add("run.flush_denormals", &c.run.flush_denormals,
        "flush denormal floats to zero (much faster once gradients get tiny; results stay "
        "deterministic)");
  o.add("run.progress", &c.run.progress,
        "live progress line on rank 0: auto (when a terminal) | on | off");
  o.add("run.device", &c.run.device,
        "where to train: auto (a GPU when this build has CUDA and one is visible) | cpu | cuda; "
        "one GPU per rank, picked by the rank's local index");
  o.add("run.precision", &c.run.precision,
        "fp32 | bf16 (GPU: bf16 activations and GEMM operands, f32 master weights, gradients "
        "and optimizer state)");
  o.add("run.tf32", &c.run.tf32,
        "TF32 tensor cores for f32 GEMMs on the GPU (faster, ~1e-3 "
        "relative error; off keeps f32 results equal to the CPU's)");

  o.add("dist.backend", &c.dist.backend,
        "gradient all-reduce: auto (NCCL on a GPU, else MPI) | nccl | mpi | none (world size 1)");
  o.add("dist.bucket_mb", &c.dist.bucket_mb, "all-reduce bucket size in MB");
  o.add("dist.overlap", &c.dist.overlap,
        "start each bucket's all-reduce during backward (off: all after backward, to measure "
        "what the overlap hides)");
  o.add("dist.zero", &c.dist.zero,
        "0: every rank keeps the whole optimizer state; 1 (ZeRO-1): each rank keeps and updates "
        "its 1/W slice (gradients reduce-scattered, parameters all-gathered)");
  o.add("dist.timeout_seconds", &c.dist.timeout_seconds,
        "a peer rank silent (dead, stopped, cut off) or without progress for this long ends the "
        "job with exit 76 instead of hanging it (MPI watchdog; NCCL collectives abort)");
  o.add("dist.straggler_seconds", &c.dist.straggler_seconds,
        "a peer this rank waits for longer than this in a collective is reported as a straggler "
        "(0 = dist.timeout_seconds / 4)");

  o.add("checkpoint.uri", &c.checkpoint.uri,
        "where checkpoints go: a path, file://PATH or s3://BUCKET/PREFIX; empty = none");
  o.add("checkpoint.every_steps", &c.checkpoint.every_steps,
        "save every N steps; 0 = only at the end and when preempted");
  o.add("checkpoint.keep", &c.checkpoint.keep, "newest complete checkpoints kept");
  o.add("checkpoint.keep_every", &c.checkpoint.keep_every,
        "also keep steps that are multiples of N; 0 = none");
  o.add("checkpoint.async", &c.checkpoint.async, "upload in the background while training goes on");
  o.add("checkpoint.retry_seconds", &c.checkpoint.retry_seconds,
        "how long one store operation retries (backoff with jitter) before the save counts as "
        "failed");
  o.add(
      "checkpoint.resume", &c.checkpoint.resume,
      "auto (newest valid checkpoint under checkpoint.uri) | never | URI of one checkpoint folder");
  o.add(
      "checkpoint.spot_notice", &c.checkpoint.spot_notice,
      "poll the AWS spot interruption notice (instance metadata) and checkpoint before it strikes");
  o.add("checkpoint.spot_url", &c.checkpoint.spot_url, "instance metadata base URL");
  o.add("checkpoint.spot_poll_seconds", &c.checkpoint.spot_poll_seconds,
        "spot notice polling period");
}

namespace {

void require(bool ok, const OptionSet& o, const std::string& key, const std::string& what) {
  if (!ok) throw InputError(o.describe(key) + ": " + what);
}

bool one_of(const std::string& v, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed)
    if (v == a) return true;
  return false;
}

}  // namespace

void validate_trainer_config(const OptionSet& o, const TrainerConfig& c) {
  require(!c.model.layers.empty(), o, "model.layer", "the model needs at least one layer");
  require(c.model.input_dim >= 0, o, "model.input_dim", "must be >= 0");
  require(!c.data.path.empty(), o, "data.path", "no data file given");
  require(one_of(c.data.normalize, {"standard", "none"}), o, "data.normalize",
          "expected standard or none");
  require(c.data.prefetch >= 1, o, "data.prefetch", "must be >= 1");
  require(c.data.block_size >= 0, o, "data.block_size", "must be >= 0");
  require(c.data.loader_threads >= 0, o, "data.loader_threads", "must be >= 0");
  require(one_of(c.data.stream, {"auto", "on", "off"}), o, "data.stream",
          "must be auto, on or off");
  require(c.data.stream_above_mb >= 0, o, "data.stream_above_mb", "must be >= 0");
  require(one_of(c.optim.name, {"adamw", "sgd"}), o, "optim.name", "expected adamw or sgd");
  require(c.optim.lr > 0, o, "optim.lr", "must be > 0");
  require(c.optim.weight_decay >= 0, o, "optim.weight_decay", "must be >= 0");
  require(c.optim.beta1 >= 0 && c.optim.beta1 < 1, o, "optim.beta1", "must be in [0, 1)");
  require(c.optim.beta2 >= 0 && c.optim.beta2 < 1, o, "optim.beta2", "must be in [0, 1)");
  require(c.optim.eps > 0, o, "optim.eps", "must be > 0");
  require(c.optim.momentum >= 0 && c.optim.momentum < 1, o, "optim.momentum", "must be in [0, 1)");
  require(one_of(c.optim.schedule, {"cosine", "linear", "constant"}), o, "optim.schedule",
          "expected cosine, linear or constant");
  require(c.optim.warmup_steps >= 0, o, "optim.warmup_steps", "must be >= 0");
  require(c.optim.min_lr_ratio >= 0 && c.optim.min_lr_ratio <= 1, o, "optim.min_lr_ratio",
          "must be in [0, 1]");
  require(c.optim.clip_norm >= 0, o, "optim.clip_norm", "must be >= 0");
  require(c.train.steps >= 1, o, "train.steps", "must be >= 1");
  require(c.train.batch_size >= 1, o, "train.batch_size", "must be >= 1");
  require(c.train.accum_steps >= 1, o, "train.accum_steps", "must be >= 1");
  require(c.train.batch_size >= c.train.accum_steps, o, "train.batch_size",
          "must be at least train.accum_steps, so every micro-batch has a sample");
  require(c.train.seed >= 0, o, "train.seed", "must be >= 0");
  require(c.train.eval_every >= 0, o, "train.eval_every", "must be >= 0");
  require(c.train.eval_batch_size >= 1, o, "train.eval_batch_size", "must be >= 1");
  require(c.train.log_every >= 1, o, "train.log_every", "must be >= 1");
  require(one_of(c.train.on_nonfinite, {"error", "skip"}), o, "train.on_nonfinite",
          "expected error or skip");
  require(c.run.threads >= 0, o, "run.threads", "must be >= 0");
  require(one_of(c.run.log_level, {"debug", "info", "warn", "error"}), o, "run.log_level",
          "expected debug, info, warn or error");
  require(one_of(c.run.progress, {"auto", "on", "off"}), o, "run.progress",
          "expected auto, on or off");
  require(one_of(c.run.device, {"auto", "cpu", "cuda"}), o, "run.device",
          "expected auto, cpu or cuda");
  require(one_of(c.run.precision, {"fp32", "bf16"}), o, "run.precision", "expected fp32 or bf16");
  require(one_of(c.dist.backend, {"auto", "nccl", "mpi", "none"}), o, "dist.backend",
          "expected auto, nccl, mpi or none");
  require(c.dist.timeout_seconds > 0, o, "dist.timeout_seconds", "must be > 0");
  require(c.dist.bucket_mb > 0, o, "dist.bucket_mb", "must be > 0");
  require(c.dist.zero == 0 || c.dist.zero == 1, o, "dist.zero", "must be 0 or 1");
  require(c.dist.straggler_seconds >= 0, o, "dist.straggler_seconds", "must be >= 0");
  // Store URIs are parsed here, once, so a bad one is a usage error before any rank starts.
  if (!c.checkpoint.uri.empty()) StoreUri::parse(c.checkpoint.uri, o.describe("checkpoint.uri"));
  if (c.checkpoint.resume != "auto" && c.checkpoint.resume != "never") {
    StoreUri::parse(c.checkpoint.resume, o.describe("checkpoint.resume"));
    long long step = -1;
    const auto pos = c.checkpoint.resume.rfind("/ckpt/step-");
    require(pos != std::string::npos &&
                std::sscanf(c.checkpoint.resume.c_str() + pos, "/ckpt/step-%lld", &step) == 1,
            o, "checkpoint.resume",
            "expected auto, never or the URI of a checkpoint folder (.../ckpt/step-NNNNNNNN)");
  }
  require(c.checkpoint.every_steps >= 0, o, "checkpoint.every_steps", "must be >= 0");
  require(c.checkpoint.keep >= 1, o, "checkpoint.keep", "must be >= 1");
  require(c.checkpoint.retry_seconds >= 0, o, "checkpoint.retry_seconds", "must be >= 0");
  require(c.checkpoint.keep_every >= 0, o, "checkpoint.keep_every", "must be >= 0");
  require(c.checkpoint.spot_poll_seconds > 0, o, "checkpoint.spot_poll_seconds", "must be > 0");
  require(!c.checkpoint.spot_notice || !c.checkpoint.spot_url.empty(), o, "checkpoint.spot_url",
          "needed when checkpoint.spot_notice is on");
}

}  // namespace tern
