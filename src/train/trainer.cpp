#include "tern/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <tuple>

#include "tern/base/error.h"
#include "tern/base/log.h"
#include "tern/base/version.h"
#include "tern/io/hdf5_file.h"
#include "tern/io/row_stream.h"
#include "tern/train/preemption.h"

namespace tern {

Trainer::Trainer(TrainerConfig cfg, Communicator& comm, std::string effective_ini, int local_rank,
                 int local_world)
    : cfg_(std::move(cfg)), comm_(comm), effective_ini_(std::move(effective_ini)) {
  const bool root = comm_.rank() == 0;
  local_world_ = local_world;
  ops::flush_denormals_on_this_thread(cfg_.run.flush_denormals);
  device_ = resolve_device(cfg_.run.device, local_rank, local_world);
  if (cfg_.run.device == "auto" && !device_.on_gpu() && cuda_device_count() > 0 && local_rank == 0)
    spdlog::warn(
        "run.device=auto: {} ranks on this node and {} GPU(s): training on the CPU (with "
        "run.device=cuda the ranks share the GPUs and all-reduce over MPI)",
        local_world, cuda_device_count());
  const DType compute = cfg_.run.precision == "bf16" ? DType::bf16 : DType::f32;
  if (compute == DType::bf16 && !device_.on_gpu())
    throw InputError("run.precision=bf16 needs a GPU (run.device=cuda; this run is on the CPU)");
  if (device_.on_gpu()) {
    set_cuda_tf32(cfg_.run.tf32);
    uploader_ = std::make_unique<BatchUploader>(device_);
  }
  if (TokenCorpus::is_token_file(cfg_.data.path)) {
    load_tokens(compute);
  } else {
    load_rows(compute);
  }
  if (!data_.has_val)
    spdlog::warn("data file '{}' has no /val split: no evaluation", cfg_.data.path);
  describe_export();
  const Shape& out = model_->output_shape();
  positions_ = model_->loss_fn().classification() ? shape_numel(out) / out.back() : 1;

  // Every rank initialises from the same seed; the broadcast makes rank 0's copy the truth even
  // if a rank's initialisation ever differed.
  model_->init_params(static_cast<uint64_t>(cfg_.train.seed));
  if (comm_.size() > 1) {
    Tensor host = model_->params().to(Device{});
    comm_.broadcast(host.raw(), host.nbytes(), 0);
    model_->params().copy_from(host);
    model_->params_changed();
  }
  // ZeRO-1: the optimizer state covers this rank's slice alone.
  const int64_t num_params = model_->num_params();
  if (cfg_.dist.zero) sharding_.emplace(num_params, comm_.size());
  const int64_t state_numel = sharding_ ? sharding_->size(comm_.rank()) : num_params;
  optim_ = std::make_unique<Optimizer>(cfg_.optim, cfg_.train.steps, state_numel, device_);
  // On a GPU the gradients travel over NCCL (dist.backend=auto|nccl), also at world size 1; with
  // dist.backend=mpi, or ranks sharing a GPU (which NCCL refuses), through host memory over MPI.
  const std::string& backend = cfg_.dist.backend;
  const bool shared_gpu = device_.on_gpu() && local_world > cuda_device_count();
  if (backend == "nccl" && !device_.on_gpu())
    throw InputError("dist.backend=nccl needs a GPU (run.device=cuda)");
  if (backend == "nccl" && shared_gpu)
    throw InputError("dist.backend=nccl: " + std::to_string(local_world) +
                     " ranks on this node share " + std::to_string(cuda_device_count()) +
                     " GPU(s), and NCCL needs a GPU per rank (use dist.backend=mpi)");
  if (device_.on_gpu() && (backend == "nccl" || (backend == "auto" && !shared_gpu)))
    grad_comm_ = make_nccl_communicator(comm_, cfg_.dist.timeout_seconds);
  Communicator& grad_comm = grad_comm_ ? *grad_comm_ : comm_;
  if (sharding_) {
    // One rank: the slice is the whole buffer, and the reduced gradients are the gradients.
    const int me = comm_.rank();
    shard_grads_ = comm_.size() == 1 ? model_->grads().slice(0, {num_params})
                                     : Tensor::zeros({sharding_->size(me)}, DType::f32, device_);
    // At least 4 chunks per slice, so that the all-gather overlaps the update; at most a bucket.
    const int64_t bucket = static_cast<int64_t>(cfg_.dist.bucket_mb * (1 << 20) / sizeof(float));
    int64_t chunk = std::clamp<int64_t>((sharding_->size(0) + 3) / 4, 1 << 14,
                                        std::max<int64_t>(bucket / comm_.size(), 1 << 14));
    // Whole 64-byte lines, so that every chunk starts where the vector kernels want it.
    chunk = (chunk + FlatSharding::kAlign - 1) / FlatSharding::kAlign * FlatSharding::kAlign;
    gather_ = std::make_unique<ParamGather>(grad_comm, model_->params(), *sharding_, chunk);
  }
  reducer_ = std::make_unique<GradReducer>(grad_comm, model_->grads(), cfg_.dist.bucket_mb,
                                           cfg_.dist.overlap, sharding_ ? &*sharding_ : nullptr,
                                           shard_grads_);

  bool resumed = false;
  if (!cfg_.checkpoint.uri.empty()) {
    const bool sharded = sharding_.has_value();
    std::vector<StateBuffer> state = {{"params", model_->params(), false}};
    if (cfg_.optim.name == "adamw")
      state.insert(state.end(), {{"optim.m", optim_->state_a(), sharded},
                                 {"optim.v", optim_->state_b(), sharded}});
    else
      state.push_back({"optim.velocity", optim_->state_a(), sharded});
    ckpt_ = std::make_unique<CheckpointManager>(
        cfg_.checkpoint, comm_, std::move(state), model_->param_table(), cfg_.optim.name,
        effective_ini_, export_info_to_json(export_info_), sharded ? &*sharding_ : nullptr);
    if (auto pos = ckpt_->resume()) {
      start_ = *pos;
      resumed = true;
      model_->params_changed();
    }
  }

  if (root && !cfg_.run.dir.empty()) {
    std::filesystem::create_directories(cfg_.run.dir);
    log_ = RunLog(cfg_.run.dir + "/metrics.jsonl", resumed);
    if (resumed)
      log_.write({{"event", "resume"}, {"step", start_.step}, {"world_size", comm_.size()}});
    if (!effective_ini_.empty()) std::ofstream(cfg_.run.dir + "/config.ini") << effective_ini_;
  }
  progress_line_ =
      root && (cfg_.run.progress == "on" || (cfg_.run.progress == "auto" && isatty(2)));
  if (root)
    spdlog::info(
        "model: {} layers, {} parameters; data: {} train rows, {} val rows; {} rank(s), "
        "global batch {}, {} {} bucket(s) over {}; optimizer state {:.2f} MB per rank{}; "
        "device {}{}",
        model_->num_layers(), model_->num_params(), data_.train.rows(), data_.val.rows(),
        comm_.size(), cfg_.train.batch_size, reducer_->num_buckets(),
        sharding_ ? "reduce-scatter" : "all-reduce",
        grad_comm_ ? "NCCL" : (comm_.size() > 1 ? "MPI" : "none"), optimizer_state_mb(),
        sharding_ ? " (ZeRO-1, rank 0's slice)" : "",
        device_.on_gpu() ? cuda_device_description() : std::string("cpu"),
        device_.on_gpu() ? ", " + cfg_.run.precision + (cfg_.run.tf32 ? " (TF32)" : "") : "");
}

// Rows of features (tern-data convert): with model.input_dim set, the model (and any mistake in
// its layer list) comes before the data file is opened; otherwise the file says how wide the
// input is.
void Trainer::load_rows(DType compute) {
  if (cfg_.model.input_dim)
    model_ = std::make_unique<Model>(cfg_.model.layers, cfg_.model.loss,
                                     Shape{cfg_.model.input_dim}, device_, compute);
  const int64_t file_dim = Dataset::input_dim_of(cfg_.data.path);
  if (cfg_.model.input_dim && cfg_.model.input_dim != file_dim)
    throw InputError("data file '" + cfg_.data.path + "': dataset /train/x: rows have " +
                     std::to_string(file_dim) + " features, the model expects " +
                     std::to_string(cfg_.model.input_dim) + " (model.input_dim)");
  if (!model_)
    model_ = std::make_unique<Model>(cfg_.model.layers, cfg_.model.loss, Shape{file_dim}, device_,
                                     compute);
  DataExpectation expect;
  expect.input_dim = file_dim;
  expect.classification = model_->loss_fn().classification();
  expect.classes = expect.classification ? model_->output_shape()[0] : 0;
  expect.target_dim = expect.classification ? 0 : shape_numel(model_->output_shape());
  const int64_t rows = h5::File::open(cfg_.data.path).info("/train/x").dims.at(0);
  if (stream_data(static_cast<double>(rows) * file_dim * sizeof(float) / 1e6)) {
    load_streamed(expect);
    return;
  }
  data_ = Dataset::load(cfg_.data.path, expect);
  stats_ = feature_stats(data_.train.x);
  data_checksum_ = content_checksum(data_.train.x) + content_checksum(data_.train.y);
  // The reference is rank 0's, which writes manifests and the export; every rank holds the whole
  // training split, so it is the same for any world size. Rows evenly spaced, as many as a
  // streamed split's (profile_rows), so both ways give the same reference.
  if (comm_.rank() == 0) {
    const int64_t rows = data_.train.rows(), n = std::min(rows, profile_rows(file_dim));
    Tensor sample = data_.train.x;
    if (n < rows) {
      sample = Tensor::empty({n, file_dim});
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(sample.data<float>() + i * file_dim,
                    data_.train.x.data<float>() + (i * rows / n) * file_dim,
                    file_dim * sizeof(float));
    }
    export_info_.input_profile =
        profile_columns(sample.data<float>(), n, file_dim, data_.feature_names);
  }
  if (cfg_.data.normalize == "standard") {
    normalize_inputs(data_.train, stats_);
    if (data_.has_val) normalize_inputs(data_.val, stats_);
  }
}

// Rows of the training split behind the export's reference profile: evenly spaced, at most 65536
// of them and 16 MB (bounded time and memory however large the split).
int64_t Trainer::profile_rows(int64_t cols) {
  return std::clamp<int64_t>((int64_t{16} << 20) / (cols * static_cast<int64_t>(sizeof(float))), 1,
                             1 << 16);
}

// data.stream: on, off, or auto by the size of the training split against this rank's share of
// the node's memory.
// Collective: rank 0 decides, so that ranks on nodes of other sizes never disagree.
bool Trainer::stream_data(double split_mb) {
  if (cfg_.data.stream != "auto") return cfg_.data.stream == "on";
  double limit_mb = static_cast<double>(cfg_.data.stream_above_mb);
  if (limit_mb == 0) {
    const double node_mb = static_cast<double>(sysconf(_SC_PHYS_PAGES)) *
                           static_cast<double>(sysconf(_SC_PAGE_SIZE)) / 1e6;
    limit_mb = node_mb / 4 / std::max(local_world_, 1);
  }
  char stream = split_mb > limit_mb ? 1 : 0;
  comm_.broadcast(&stream, 1, 0);
  return stream != 0;
}

// Runs rank 0's part of loading (a pass over the file) and tells every rank how it went, so that
// all of them stop alike: exit 2 for bad data (InputError), 1 for anything else.
void Trainer::on_root_then_share(const std::function<void()>& work) {
  std::string error;
  char kind = 0;  // 0: fine, 1: InputError, 2: another error
  if (comm_.rank() == 0) {
    try {
      work();
    } catch (const InputError& e) {
      error = e.what();
      kind = 1;
    } catch (const std::exception& e) {
      error = e.what();
      kind = 2;
    }
  }
  comm_.broadcast(&kind, 1, 0);
  share_from_root(error);
  if (kind == 1) throw InputError(error);
  if (kind == 2) throw std::runtime_error(error);
}

// The splits stay in the file (StreamedRows): rank 0 reads them through once, a block at a time,
// for the checks, the checksum and the normalisation statistics, and tells the others, so that
// every rank fails alike on bad data and normalises alike.
void Trainer::load_streamed(const DataExpectation& expect) {
  data_.path = cfg_.data.path;
  auto train = StreamedRows::open(cfg_.data.path, "train", expect);
  if (train->rows() == 0)
    throw InputError("data file '" + cfg_.data.path + "': dataset /train/x: has no rows");
  {
    h5::File f = h5::File::open(cfg_.data.path);
    data_.feature_names = feature_names_of(f);
    data_.has_val = f.exists("/val/x") || f.exists("/val/y");
  }
  std::shared_ptr<StreamedRows> val;
  if (data_.has_val) val = StreamedRows::open(cfg_.data.path, "val", expect);
  const int64_t cols = train->features();
  on_root_then_share([&] {
    StreamedRows::Scan scan = train->scan(true);
    if (val) val->scan(false);
    stats_ = std::move(scan.stats);
    data_checksum_ = scan.checksum;
    const Tensor sample = train->sample_x(profile_rows(cols));
    export_info_.input_profile =
        profile_columns(sample.data<float>(), sample.dim(0), cols, data_.feature_names);
  });
  for (auto* v : {&stats_.mean, &stats_.stddev, &stats_.min, &stats_.max}) {
    v->resize(cols);
    comm_.broadcast(v->data(), v->size() * sizeof(double), 0);
  }
  share_from_root(data_checksum_);
  if (cfg_.data.normalize == "standard") {
    train->normalize(stats_);
    if (val) val->normalize(stats_);
  }
  if (comm_.rank() == 0)
    spdlog::info(
        "data: streaming {} ({} train rows{}), rows read from the file as batches need them{}",
        cfg_.data.path, train->rows(),
        val ? ", " + std::to_string(val->rows()) + " val rows" : std::string(),
        train->direct() ? std::string()
                        : "; slowly: not directly addressable (" + train->why_not_direct() +
                              "), read through HDF5");
  data_.train.name = "train";
  data_.train.stream = std::move(train);
  if (val) {
    data_.val.name = "val";
    data_.val.stream = std::move(val);
  }
}

// A token corpus (tern-data text): samples are windows of data.block_size tokens, the targets
// the next token at every position, the model's input the token ids.
void Trainer::load_tokens(DType compute) {
  const int64_t T = cfg_.data.block_size;
  if (T < 1)
    throw InputError("data file '" + cfg_.data.path +
                     "' is a token corpus: set data.block_size, the context length");
  const int64_t tokens = h5::File::open(cfg_.data.path).info("/train/tokens").dims.at(0);
  const bool streamed = stream_data(static_cast<double>(tokens) * sizeof(int32_t) / 1e6);
  TokenCorpus corpus;
  if (streamed)
    corpus.vocab = TokenCorpus::vocab_of(cfg_.data.path);
  else
    corpus = TokenCorpus::load(cfg_.data.path);
  model_ = std::make_unique<Model>(cfg_.model.layers, cfg_.model.loss, Shape{T}, device_, compute);
  const Shape& out = model_->output_shape();
  const int64_t vocab = static_cast<int64_t>(corpus.vocab.size());
  if (!model_->loss_fn().classification() || out.size() != 2 || out[0] != T || out[1] != vocab)
    throw InputError("model: a language model over '" + cfg_.data.path + "' must map [" +
                     std::to_string(T) + "] token ids to [" + std::to_string(T) + ", " +
                     std::to_string(vocab) +
                     "] logits with softmax_cross_entropy; this one gives " + shape_str(out));
  if (tokens <= T)
    throw InputError("data file '" + cfg_.data.path + "': /train/tokens has " +
                     std::to_string(tokens) + " tokens, not more than the context " +
                     std::to_string(T));
  data_.path = cfg_.data.path;
  if (streamed) {
    load_streamed_tokens(vocab, T);
  } else {
    data_.train = token_windows("train", corpus.train, T);
    data_.has_val = corpus.val.numel() > T;
    if (data_.has_val) data_.val = token_windows("val", corpus.val, T);
    data_checksum_ = content_checksum(corpus.train);
  }
  vocab_ = std::move(corpus.vocab);
}

// Token splits left in the file (StreamedTokens), checked by rank 0's pass as rows are.
void Trainer::load_streamed_tokens(int64_t vocab, int64_t T) {
  auto train = StreamedTokens::open(cfg_.data.path, "/train/tokens");
  std::shared_ptr<StreamedTokens> val;
  if (h5::File::open(cfg_.data.path).exists("/val/tokens"))
    val = StreamedTokens::open(cfg_.data.path, "/val/tokens");
  on_root_then_share([&] {
    data_checksum_ = train->scan(vocab);
    if (val) val->scan(vocab);
  });
  share_from_root(data_checksum_);
  if (comm_.rank() == 0)
    spdlog::info(
        "data: streaming {} ({} train tokens{}), windows read from the file as batches "
        "need them",
        cfg_.data.path, train->size(),
        val ? ", " + std::to_string(val->size()) + " val tokens" : std::string());
  data_.train.name = "train";
  data_.train.block = T;
  data_.train.token_stream = std::move(train);
  data_.has_val = val && val->size() > T;
  if (data_.has_val) {
    data_.val.name = "val";
    data_.val.block = T;
    data_.val.token_stream = std::move(val);
  }
}

// Rank 0's string on every rank.
void Trainer::share_from_root(std::string& text) {
  uint64_t size = text.size();
  comm_.broadcast(&size, sizeof size, 0);
  text.resize(size);
  comm_.broadcast(text.data(), size, 0);
}

Trainer::~Trainer() = default;

// What the optimizer keeps on this rank (ZeRO-1: its slice), in MB.
double Trainer::optimizer_state_mb() const {
  return static_cast<double>(optim_->state_a().nbytes() + optim_->state_b().nbytes()) / 1e6;
}

std::pair<Tensor, Tensor> Trainer::on_device(const Tensor& x, const Tensor& y) {
  if (!uploader_) return {x, y};
  return uploader_->upload(x, y);
}

void Trainer::describe_export() {
  ExportInfo& e = export_info_;
  if (!vocab_.empty()) e.input_datatype = "INT32";
  e.layers = cfg_.model.layers;
  e.loss = cfg_.model.loss;
  e.input_shape = model_->input_shape();
  const bool classes = model_->loss_fn().classification();
  e.output_name = classes ? "logits" : "output";
  if (!vocab_.empty())
    e.labels = vocab_;  // the characters, by token id
  else if (classes)
    for (int64_t c = 0; c < model_->output_shape().back(); ++c)
      e.labels.push_back(std::to_string(c));
  e.normalization = vocab_.empty() ? cfg_.data.normalize : "none";
  if (e.normalization == "standard") e.norm = stats_;
  e.feature_stats = stats_;
  const std::string& data_sum = data_checksum_;
  e.lineage = {{"dataset", cfg_.data.path},
               {"dataset_checksum", data_sum},
               {"config", effective_ini_},
               {"code_version", version_string()}};
}

// The distribution of the model's answers on the whole validation split: the predicted class
// (classification) or each output (regression). Token models have none.
DataProfile Trainer::prediction_profile() {
  DataProfile out;
  if (!data_.has_val || data_.val.block) return out;
  const Split& val = data_.val;
  const bool classes = model_->loss_fn().classification();
  const int64_t width = shape_numel(model_->output_shape());
  std::vector<int64_t> predicted;
  std::vector<float> outputs;
  StepContext ctx{false, static_cast<uint64_t>(cfg_.train.seed), 0, nullptr};
  for (int64_t r = 0; r < val.rows(); r += cfg_.train.eval_batch_size) {
    const int64_t n = std::min(cfg_.train.eval_batch_size, val.rows() - r);
    auto [hx, hy] = val.rows_at(r, n);
    auto [x, y] = on_device(hx, hy);
    const Tensor host = model_->forward(x, ctx).to(Device{});
    const float* o = host.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      if (classes)
        predicted.push_back(std::max_element(o + i * width, o + (i + 1) * width) - (o + i * width));
      else
        outputs.insert(outputs.end(), o + i * width, o + (i + 1) * width);
    }
  }
  if (classes) {
    out.columns.push_back(profile_classes(predicted, width, "predicted_class"));
    return out;
  }
  std::vector<std::string> names;
  for (int64_t k = 0; k < width; ++k) names.push_back("output_" + std::to_string(k));
  return profile_columns(outputs.data(), val.rows(), width, names);
}

EvalResult Trainer::evaluate() {
  EvalResult out;
  if (!data_.has_val) return out;
  // Token windows overlap: evaluation reads the non-overlapping ones, every token once.
  const Split& val = data_.val;
  const int64_t samples = val.block ? (val.num_tokens() - 1) / val.block : val.rows();
  auto [begin, end] = even_share(samples, comm_.rank(), comm_.size());
  double sums[3] = {0, 0, static_cast<double>((end - begin) * positions_)};
  StepContext ctx{false, static_cast<uint64_t>(cfg_.train.seed), 0, nullptr};
  for (int64_t r = begin; r < end; r += cfg_.train.eval_batch_size) {
    const int64_t n = std::min(cfg_.train.eval_batch_size, end - r);
    Tensor hx, hy;
    if (val.block) {
      const int64_t T = val.block;
      hx = Tensor::empty({n, T}, DType::i32);
      hy = Tensor::empty({n, T}, DType::i32);
      for (int64_t i = 0; i < n; ++i)
        val.window((r + i) * T, hx.data<int32_t>() + i * T, hy.data<int32_t>() + i * T);
    } else {
      std::tie(hx, hy) = val.rows_at(r, n);
    }
    auto [x, y] = on_device(hx, hy);
    model_->forward(x, ctx);
    ops::LossStats s = model_->loss(y, 1.0f, false);
    sums[0] += s.loss_sum;
    sums[1] += static_cast<double>(s.correct);
  }
  comm_.allreduce_sum(sums, 3);
  out.rows = static_cast<int64_t>(sums[2]);
  out.loss = sums[0] / std::max(sums[2], 1.0);
  out.accuracy = model_->loss_fn().classification() ? sums[1] / std::max(sums[2], 1.0) : 0.0;
  return out;
}

void Trainer::log_progress(int64_t step, double loss, float lr, double samples_per_sec,
                           bool final) {
  const int64_t total = cfg_.train.steps;
  const double elapsed = seconds_since(start_time_);
  const int64_t done = step - start_step_;
  const double eta = done > 0 ? elapsed / done * (total - step) : 0;
  char line[200];
  std::snprintf(line, sizeof line,
                "step %lld/%lld  loss %.4f  lr %.2e  %.0f samples/s  ETA %d:%02d",
                static_cast<long long>(step), static_cast<long long>(total), loss, lr,
                samples_per_sec, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
  if (progress_line_) {
    std::fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
    std::fflush(stderr);
  } else if (comm_.rank() == 0 && (final || step % std::max<int64_t>(total / 10, 1) == 0)) {
    spdlog::info("{}", line);
  }
}

TrainResult Trainer::run() {
  const TrainConfig& tc = cfg_.train;
  const int64_t B = tc.batch_size;
  // The loss is the mean over samples and, for sequences, over their positions.
  const float grad_scale = 1.0f / static_cast<float>(B * positions_);
  const CheckpointConfig& cc = cfg_.checkpoint;
  PreemptionWatcher preemption(cc.spot_notice ? cc.spot_url : "", cc.spot_poll_seconds);
  start_step_ = start_.step;
  TrainResult result;
  result.train_loss = start_.train_loss;
  start_time_ = Clock::now();
  if (start_step_ >= tc.steps) {
    if (comm_.rank() == 0)
      spdlog::info("the checkpoint is at step {}: training is complete", start_step_);
    if (data_.has_val) result.val = evaluate();
    return finish(result, start_step_, 0.0);
  }
  Loader::Options lo{B,
                     tc.accum_steps,
                     comm_.rank(),
                     comm_.size(),
                     cfg_.data.prefetch,
                     start_step_,
                     static_cast<uint64_t>(tc.seed),
                     start_.samples_seen,
                     nullptr};
  if (device_.on_gpu()) lo.allocate = pinned_empty;
  lo.threads = cfg_.data.loader_threads
                   ? cfg_.data.loader_threads
                   : std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 4);
  Loader loader(data_.train, lo);
  StepTimes interval_times;
  double interval_loss = 0;
  int64_t interval_steps = 0;
  Clock::time_point interval_start = start_time_;
  auto grads_ready = [this](int64_t offset) { reducer_->grads_ready_from(offset); };
  // The next batch, already on its way to the device: on a GPU it is fetched and its copy queued
  // while the current step's backward and optimizer kernels run.
  auto fetch = [&] {
    Batch b = loader.next();
    std::tie(b.x, b.y) = on_device(b.x, b.y);
    return b;
  };
  auto tf = Clock::now();
  Batch next = fetch();
  double fetch_seconds = seconds_since(tf);

  int64_t step = start_step_;
  while (step < tc.steps) {
    comm_.set_step(step + 1);
    StepTimes t;
    model_->zero_grads();
    reducer_->begin_step();
    double loss_sum = 0;
    for (int64_t micro = 0; micro < tc.accum_steps; ++micro) {
      Batch batch = std::move(next);
      auto t1 = Clock::now();
      StepContext ctx{true, static_cast<uint64_t>(tc.seed), batch.first_sample, nullptr};
      if (comm_.size() > 1)
        ctx.allreduce_sum = [this](double* v, int n) { comm_.allreduce_sum(v, n); };
      model_->forward(batch.x, ctx);
      loss_sum += model_->loss(batch.y, grad_scale, true).loss_sum;
      auto t2 = Clock::now();
      const bool last = micro + 1 == tc.accum_steps;
      model_->backward(ctx, last ? std::function<void(int64_t)>(grads_ready) : nullptr);
      auto t3 = Clock::now();
      t.data_wait += fetch_seconds;
      fetch_seconds = 0;
      if (!last || step + 1 < tc.steps) {
        next = fetch();
        fetch_seconds = seconds_since(t3);
      }
      t.forward += std::chrono::duration<double>(t2 - t1).count();
      t.backward += std::chrono::duration<double>(t3 - t2).count();
    }
    auto t4 = Clock::now();
    reducer_->finish();
    // The loss sum, the preemption flag and (ZeRO-1) the slices' squared gradient norms travel
    // together: every rank sees all three.
    double shared[3] = {loss_sum, preemption.requested() ? 1.0 : 0.0,
                        sharding_ ? ops::sum_squares(shard_grads_) : 0.0};
    comm_.allreduce_sum(shared, sharding_ ? 3 : 2);
    const double loss = shared[0] / static_cast<double>(B * positions_);
    auto t5 = Clock::now();
    t.allreduce_wait = std::chrono::duration<double>(t5 - t4).count();

    Optimizer::StepStats os;
    if (std::isfinite(loss) && sharding_) {
      const int me = comm_.rank();
      os = optim_->step_slice(*model_, shard_grads_, sharding_->begin(me), step, shared[2],
                              sharding_->num_chunks(gather_->chunk()), gather_->chunk(),
                              [this](int c) { gather_->chunk_done(c); });
      gather_->finish();
      model_->params_changed();
    } else if (std::isfinite(loss)) {
      os = optim_->step(*model_, step);
    } else if (tc.on_nonfinite == "error") {
      throw std::runtime_error("non-finite training loss (" + std::to_string(loss) + ") at step " +
                               std::to_string(step + 1) +
                               "; lower optim.lr, set optim.clip_norm, or train.on_nonfinite=skip");
    } else {
      spdlog::warn("step {}: non-finite loss, update skipped (train.on_nonfinite=skip)", step + 1);
      os.lr = learning_rate(cfg_.optim, step, tc.steps);
    }
    t.optimizer = seconds_since(t5);
    ++step;
    const TrainingPosition pos{step, start_.samples_seen + (step - start_step_) * B, loss};
    const bool preempted = shared[1] > 0;
    if (ckpt_ && (preempted || (cc.every_steps && step % cc.every_steps == 0 && step < tc.steps)))
      t.checkpoint_stall = ckpt_->save(pos, preempted || !cc.async);
    interval_times.add(t);
    if (std::isfinite(loss)) interval_loss += loss;
    ++interval_steps;

    if (preempted) {
      result.preempted = true;
      // The flag may have been raised on another rank (a spot notice on its host only).
      const std::string reason =
          preemption.requested() ? preemption.reason() : "requested on another rank";
      result.train_loss = interval_loss / interval_steps;
      const bool saved = ckpt_ && ckpt_->last_committed() == step;
      log_.write(
          {{"event", "preempted"}, {"step", step}, {"reason", reason}, {"checkpoint", saved}});
      if (comm_.rank() == 0) {
        if (saved)
          spdlog::warn(
              "preempted ({}): checkpoint of step {} committed; exiting with {} to be requeued",
              reason, step, 75);
        else
          spdlog::error("preempted ({}) at step {}, and {}; a requeued job resumes from step {}",
                        reason, step, ckpt_ ? "the checkpoint failed" : "checkpoint.uri is not set",
                        ckpt_ ? std::max<int64_t>(ckpt_->last_committed(), 0) : 0);
      }
      return result;
    }

    const bool last_step = step == tc.steps;
    if (step % tc.log_every == 0 || last_step) {
      const double secs = seconds_since(interval_start);
      const double sps = static_cast<double>(interval_steps * B) / std::max(secs, 1e-9);
      result.train_loss = interval_loss / interval_steps;
      nlohmann::json rec = {{"step", step},
                            {"epoch", static_cast<double>(pos.samples_seen) / data_.train.rows()},
                            {"train_loss", result.train_loss},
                            {"lr", os.lr},
                            {"grad_norm", os.grad_norm},
                            {"samples_per_sec", sps}};
      rec.update(interval_times.per_step_ms(interval_steps));
      log_.write(rec);
      if (comm_.rank() == 0) log_progress(step, result.train_loss, os.lr, sps, last_step);
      interval_times = {};
      interval_loss = 0;
      interval_steps = 0;
      interval_start = Clock::now();
    }
    if (data_.has_val &&
        ((tc.eval_every && step % tc.eval_every == 0 && !last_step) || last_step)) {
      auto te = Clock::now();
      EvalResult ev = evaluate();
      log_.write({{"step", step},
                  {"event", "eval"},
                  {"val_loss", ev.loss},
                  {"val_accuracy", ev.accuracy}});
      if (comm_.rank() == 0 && !last_step)
        spdlog::info("step {}: val_loss {:.4f} val_accuracy {:.4f}", step, ev.loss, ev.accuracy);
      result.val = ev;
      interval_start += Clock::now() - te;  // evaluation is not training throughput
    }
  }
  if (ckpt_ && ckpt_->last_committed() != step)
    ckpt_->save({step, start_.samples_seen + (step - start_step_) * B, result.train_loss}, true);
  if (ckpt_) ckpt_->wait();
  return finish(result, step, seconds_since(start_time_));
}

TrainResult Trainer::finish(TrainResult result, int64_t step, double wall) {
  const TrainConfig& tc = cfg_.train;
  result.steps = step;
  result.param_checksum = content_checksum(model_->params());
  result.samples_per_sec =
      static_cast<double>((step - start_step_) * tc.batch_size) / std::max(wall, 1e-9);
  nlohmann::json done = {{"event", "done"},
                         {"step", step},
                         {"train_loss", result.train_loss},
                         {"param_checksum", result.param_checksum},
                         {"wall_seconds", wall},
                         {"samples_per_sec", result.samples_per_sec},
                         {"world_size", comm_.size()},
                         {"optimizer_state_mb", optimizer_state_mb()},
                         {"version", version_string()}};
  if (data_.has_val) {
    done["val_loss"] = result.val.loss;
    done["val_accuracy"] = result.val.accuracy;
  }
  if (comm_.rank() == 0 && !cfg_.run.dir.empty()) {
    ExportInfo e = export_info_;
    e.prediction_profile = prediction_profile();
    e.lineage["step"] = step;
    e.lineage["metrics"] = {{"train_loss", result.train_loss}};
    if (data_.has_val)
      e.lineage["metrics"].update(
          {{"val_loss", result.val.loss}, {"val_accuracy", result.val.accuracy}});
    write_export(cfg_.run.dir + "/model.h5", e, model_->param_table(),
                 model_->params().to(Device{}));
    done["export"] = cfg_.run.dir + "/model.h5";
  }
  log_.write(done);
  if (comm_.rank() == 0)
    spdlog::info("done: {} steps in {:.1f} s, train_loss {:.4f}{}, param_checksum {}", step, wall,
                 result.train_loss,
                 data_.has_val ? fmt::format(", val_loss {:.4f}, val_accuracy {:.4f}",
                                             result.val.loss, result.val.accuracy)
                               : "",
                 result.param_checksum);
  return result;
}

}  // namespace tern
