#include "tern/train/checkpoint.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <map>

#include "tern/base/clock.h"
#include "tern/base/error.h"
#include "tern/base/log.h"
#include "tern/base/version.h"

namespace tern {
namespace {

constexpr const char* kManifest = "MANIFEST.json";

std::string xxh3_hex(const void* data, size_t size) {
  char out[17];
  std::snprintf(out, sizeof out, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(data, size)));
  return out;
}

std::string shard_key(int rank, int world) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%05d-of-%05d.bin", rank, world);
  return name;
}

// "ckpt/step-00001200/..." -> 1200, or -1.
int64_t step_of_key(const std::string& key) {
  long long step = -1;
  if (std::sscanf(key.c_str(), "ckpt/step-%lld/", &step) != 1) return -1;
  return step;
}

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool same_layout(const std::vector<ParamInfo>& a, const std::vector<ParamInfo>& b,
                 std::string* why) {
  if (a.size() != b.size()) {
    *why =
        std::to_string(a.size()) + " parameter tensors, the model has " + std::to_string(b.size());
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].shape != b[i].shape || a[i].offset != b[i].offset) {
      *why = "tensor " + a[i].name + " " + shape_str(a[i].shape) + " where the model has " +
             b[i].name + " " + shape_str(b[i].shape);
      return false;
    }
  return true;
}

}  // namespace

std::string checkpoint_folder(int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "ckpt/step-%08lld", static_cast<long long>(step));
  return name;
}

nlohmann::json Manifest::to_json() const {
  nlohmann::json j;
  j["format"] = kFormat;
  j["step"] = position.step;
  j["samples_seen"] = position.samples_seen;
  j["train_loss"] = position.train_loss;
  j["world_size"] = world_size;
  j["state_bytes"] = state_bytes;
  j["created"] = created;
  for (const auto& [name, bytes] : buffers)
    j["buffers"].push_back({{"name", name}, {"bytes", bytes}});
  for (const auto& t : tensors)
    j["tensors"].push_back({{"name", t.name},
                            {"dtype", "f32"},
                            {"shape", t.shape},
                            {"offset", t.offset},
                            {"decay", t.decay}});
  for (const auto& s : shards)
    j["shards"].push_back(
        {{"key", s.key}, {"offset", s.offset}, {"size", s.size}, {"xxh3", s.xxh3}});
  j["optimizer"] = optimizer;
  j["config"] = config;
  j["config_hash"] = config_hash;
  j["code_version"] = code_version;
  j["model"] = model;
  return j;
}

Manifest Manifest::parse(const std::string& text, const std::string& where) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.at("format") != kFormat)
      throw InputError(where + ": format '" + j.at("format").dump() + "', expected " + kFormat);
    Manifest m;
    m.position = {j.at("step"), j.at("samples_seen"), j.value("train_loss", 0.0)};
    m.world_size = j.at("world_size");
    m.state_bytes = j.at("state_bytes");
    m.created = j.value("created", int64_t{0});
    for (const auto& b : j.at("buffers")) m.buffers.emplace_back(b.at("name"), b.at("bytes"));
    for (const auto& t : j.at("tensors")) {
      ParamInfo p;
      p.name = t.at("name");
      p.shape = t.at("shape").get<Shape>();
      p.offset = t.at("offset");
      p.decay = t.value("decay", true);
      m.tensors.push_back(p);
    }
    for (const auto& s : j.at("shards"))
      m.shards.push_back({s.at("key"), s.at("offset"), s.at("size"), s.at("xxh3")});
    m.optimizer = j.value("optimizer", "");
    m.config = j.value("config", "");
    m.config_hash = j.value("config_hash", "");
    m.code_version = j.value("code_version", "");
    m.model = j.value("model", nlohmann::json::object());
    uint64_t covered = 0;
    for (const auto& s : m.shards) {
      if (s.offset != covered) throw InputError(where + ": shards do not tile the state");
      covered += s.size;
    }
    if (covered != m.state_bytes)
      throw InputError(where + ": shards cover " + std::to_string(covered) + " of " +
                       std::to_string(m.state_bytes) + " bytes");
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": malformed manifest: " + e.what());
  }
}

std::vector<CheckpointListing> list_checkpoints(ObjectStore& store) {
  std::map<int64_t, CheckpointListing> by_step;
  for (const ObjectInfo& o : store.list("ckpt/step-")) {
    const int64_t step = step_of_key(o.key);
    if (step < 0) continue;
    CheckpointListing& l = by_step[step];
    l.step = step;
    l.bytes += o.size;
    l.mtime = std::max(l.mtime, o.mtime);
    if (o.key == checkpoint_folder(step) + "/" + kManifest) l.complete = true;
  }
  std::vector<CheckpointListing> out;
  for (auto& [step, l] : by_step) out.push_back(l);
  return out;
}

Manifest read_checkpoint(ObjectStore& store, int64_t step, std::string* out) {
  const std::string folder = checkpoint_folder(step);
  const std::string where = store.uri() + "/" + folder;
  Manifest m = Manifest::parse(store.get(folder + "/" + kManifest), where + "/" + kManifest);
  if (m.position.step != step)
    throw InputError(where + ": manifest says step " + std::to_string(m.position.step));
  out->assign(m.state_bytes, '\0');
  // Shards in parallel: over S3 each is an independent GET.
  std::vector<std::future<void>> reads;
  for (const ShardEntry& s : m.shards)
    reads.push_back(std::async(std::launch::async, [&store, &folder, &where, &s, out] {
      const std::string bytes = store.get(folder + "/" + s.key);
      if (bytes.size() != s.size)
        throw StoreError(where + "/" + s.key + ": " + std::to_string(bytes.size()) +
                         " bytes, manifest says " + std::to_string(s.size));
      if (xxh3_hex(bytes.data(), bytes.size()) != s.xxh3)
        throw StoreError(where + "/" + s.key + ": checksum mismatch (corrupt shard)");
      std::memcpy(out->data() + s.offset, bytes.data(), bytes.size());
    }));
  for (auto& r : reads) r.get();
  return m;
}

CheckpointManager::CheckpointManager(const CheckpointConfig& cfg, Communicator& comm,
                                     std::vector<StateBuffer> buffers,
                                     std::vector<ParamInfo> layout, std::string optimizer,
                                     std::string config_text, nlohmann::json model,
                                     const FlatSharding* sharding)
    : cfg_(cfg),
      comm_(comm.duplicate()),
      store_(open_store(cfg.uri, cfg.retry_seconds)),
      buffers_(std::move(buffers)),
      layout_(std::move(layout)),
      optimizer_(std::move(optimizer)),
      config_(std::move(config_text)),
      config_hash_(xxh3_hex(config_.data(), config_.size())),
      model_(std::move(model)) {
  if (sharding) sharding_ = *sharding;
  for (const auto& b : buffers_) {
    const int64_t numel = b.sharded ? sharding_->total() : b.tensor.numel();
    const bool fits = !sharding_ || (b.sharded ? b.tensor.numel() == sharding_->size(comm_->rank())
                                               : b.tensor.numel() == sharding_->total());
    if ((b.sharded && !sharding_) || !fits || b.tensor.dtype() != DType::f32)
      throw std::invalid_argument("CheckpointManager: buffer " + b.name +
                                  " does not fit the sharding");
    buffer_bytes_.push_back(static_cast<uint64_t>(numel) * sizeof(float));
    state_bytes_ += buffer_bytes_.back();
  }
  if (sharding_ && buffers_.size() > kMaxPieces)
    throw std::invalid_argument("CheckpointManager: too many buffers to shard");
  worker_.start([this] { upload_loop(); });
}

// A pending save is still committed: stop() lets the loop finish it.
CheckpointManager::~CheckpointManager() { worker_.stop(); }

// Unsharded: rank r writes bytes [r*S/W, (r+1)*S/W) of the state. ZeRO-1: its slice of each
// buffer (none when its slice is empty).
std::vector<CheckpointManager::Piece> CheckpointManager::pieces_of(int rank, int world) const {
  if (!sharding_) {
    const uint64_t lo = state_bytes_ * rank / world, hi = state_bytes_ * (rank + 1) / world;
    return {{shard_key(rank, world), lo, hi - lo}};
  }
  std::vector<Piece> out;
  uint64_t base = 0;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const uint64_t lo = sharding_->begin(rank) * sizeof(float);
    const uint64_t size = sharding_->size(rank) * sizeof(float);
    if (size) out.push_back({buffers_[i].name + "." + shard_key(rank, world), base + lo, size});
    base += buffer_bytes_[i];
  }
  return out;
}

void CheckpointManager::copy_range(uint64_t offset, uint64_t size, char* bytes,
                                   bool to_buffers) const {
  uint64_t base = 0;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const StateBuffer& b = buffers_[i];
    // Where the tensor's bytes lie in the whole state.
    const uint64_t first = base + (b.sharded ? sharding_->begin(comm_->rank()) * sizeof(float) : 0);
    const uint64_t lo = std::max(offset, first),
                   hi = std::min(offset + size, first + b.tensor.nbytes());
    if (lo < hi) {
      char* buf = static_cast<char*>(b.tensor.raw()) + (lo - first);
      char* ext = bytes + (lo - offset);
      // The buffers may be in GPU memory; `bytes` is always host memory.
      if (to_buffers)
        copy_bytes(buf, b.tensor.device(), ext, Device{}, hi - lo);
      else
        copy_bytes(ext, Device{}, buf, b.tensor.device(), hi - lo);
    }
    base += buffer_bytes_[i];
  }
}

double CheckpointManager::save(const TrainingPosition& pos, bool sync) {
  const auto start = Clock::now();
  wait();
  Job job;
  job.pos = pos;
  job.pieces = pieces_of(comm_->rank(), comm_->size());
  uint64_t total = 0;
  for (const Piece& p : job.pieces) total += p.size;
  snapshot_.resize(total);
  total = 0;
  for (const Piece& p : job.pieces) {
    copy_range(p.offset, p.size, snapshot_.data() + total, false);
    total += p.size;
  }
  {
    auto lock = worker_.lock();
    pending_ = std::move(job);
    busy_ = true;
  }
  worker_.notify();
  if (sync) wait();
  return seconds_since(start);
}

void CheckpointManager::wait() {
  auto lock = worker_.lock();
  worker_.wait_until(lock, [&] { return !busy_; });
}

int64_t CheckpointManager::last_committed() const {
  auto lock = worker_.lock();
  return last_committed_;
}

void CheckpointManager::upload_loop() {
  for (;;) {
    Job job;
    {
      auto lock = worker_.lock();
      worker_.wait(lock, [&] { return pending_.has_value(); });
      if (!pending_) return;  // stopped with nothing pending
      job = std::move(*pending_);
      pending_.reset();
    }
    commit(job);
    {
      auto lock = worker_.lock();
      busy_ = false;
    }
    worker_.notify();
  }
}

// The commit protocol: every rank writes its shard; all ranks agree it is durable (all-gather of
// success and checksum); rank 0 then writes the manifest, conditionally, and only then applies
// retention. Any failure leaves no manifest, so the checkpoint does not exist for resume.
void CheckpointManager::commit(const Job& job) {
  const int rank = comm_->rank(), world = comm_->size();
  const std::string folder = checkpoint_folder(job.pos.step);
  const auto start = Clock::now();
  ShardReport mine{};
  try {
    const char* bytes = snapshot_.data();
    for (size_t i = 0; i < job.pieces.size(); ++i) {
      const Piece& p = job.pieces[i];
      store_->put(folder + "/" + p.key, bytes, p.size);
      std::snprintf(mine.xxh3[i], sizeof mine.xxh3[i], "%s", xxh3_hex(bytes, p.size).c_str());
      bytes += p.size;
    }
    mine.ok = 1;
  } catch (const std::exception& e) {
    spdlog::error("checkpoint step {}: shard of rank {} not written: {}", job.pos.step, rank,
                  e.what());
  }
  std::vector<ShardReport> all(world);
  comm_->allgather(&mine, sizeof mine, all.data());
  // Rank 0 decides and tells everyone, so all ranks agree on what was committed.
  char committed = rank == 0 ? write_manifest(job, all) : 0;
  comm_->broadcast(&committed, 1, 0);
  if (!committed) return;
  {
    auto lock = worker_.lock();
    last_committed_ = job.pos.step;
  }
  if (rank != 0) return;
  spdlog::info("checkpoint step {} committed to {}/{} ({:.1f} MB in {:.2f} s)", job.pos.step,
               store_->uri(), folder, state_bytes_ / 1e6, seconds_since(start));
  try {
    apply_retention(job.pos.step);
  } catch (const std::exception& e) {
    spdlog::warn("checkpoint retention after step {}: {}", job.pos.step, e.what());
  }
}

bool CheckpointManager::write_manifest(const Job& job, const std::vector<ShardReport>& all) {
  const int world = comm_->size();
  for (int r = 0; r < world; ++r)
    if (!all[r].ok) {
      spdlog::error(
          "checkpoint step {} failed: rank {} could not write its shard; no manifest written, "
          "training goes on",
          job.pos.step, r);
      return false;
    }
  Manifest m;
  m.position = job.pos;
  m.world_size = world;
  m.state_bytes = state_bytes_;
  m.created = now_unix();
  for (size_t i = 0; i < buffers_.size(); ++i)
    m.buffers.emplace_back(buffers_[i].name, buffer_bytes_[i]);
  m.tensors = layout_;
  for (int r = 0; r < world; ++r) {
    const std::vector<Piece> pieces = pieces_of(r, world);
    for (size_t i = 0; i < pieces.size(); ++i)
      m.shards.push_back({pieces[i].key, pieces[i].offset, pieces[i].size, all[r].xxh3[i]});
  }
  // In the order of the state, as the manifest's readers check that the pieces tile it.
  std::sort(m.shards.begin(), m.shards.end(),
            [](const ShardEntry& a, const ShardEntry& b) { return a.offset < b.offset; });
  m.optimizer = optimizer_;
  m.config = config_;
  m.config_hash = config_hash_;
  m.code_version = version_string();
  m.model = model_;
  const std::string text = m.to_json().dump(1);
  try {
    if (!store_->put_if_absent(checkpoint_folder(job.pos.step) + "/" + kManifest, text.data(),
                               text.size()))
      spdlog::info("checkpoint step {} was already committed by an earlier run; kept",
                   job.pos.step);
  } catch (const std::exception& e) {
    spdlog::error("checkpoint step {} failed: manifest not written: {}", job.pos.step, e.what());
    return false;
  }
  return true;
}

// Keeps the newest `keep` complete checkpoints plus multiples of `keep_every`; removes the rest
// older than `newest`, and folders left incomplete by interrupted saves. A manifest goes first so
// that a half-deleted checkpoint is never taken for a complete one.
void CheckpointManager::apply_retention(int64_t newest) {
  std::vector<CheckpointListing> all = list_checkpoints(*store_);
  std::vector<int64_t> complete;
  for (const auto& l : all)
    if (l.complete) complete.push_back(l.step);
  std::sort(complete.rbegin(), complete.rend());
  auto keep = [&](const CheckpointListing& l) {
    if (l.step >= newest) return true;
    if (!l.complete) return false;
    if (cfg_.keep_every > 0 && l.step % cfg_.keep_every == 0) return true;
    const auto pos = std::find(complete.begin(), complete.end(), l.step) - complete.begin();
    return pos < cfg_.keep;
  };
  for (const auto& l : all) {
    if (keep(l)) continue;
    const std::string folder = checkpoint_folder(l.step);
    if (l.complete) store_->remove(folder + "/" + kManifest);
    for (const ObjectInfo& o : store_->list(folder + "/")) store_->remove(o.key);
    spdlog::debug("checkpoint retention: removed {}", folder);
  }
}

std::optional<TrainingPosition> CheckpointManager::resume() {
  if (cfg_.resume == "never") return std::nullopt;
  const bool root = comm_->rank() == 0;
  std::unique_ptr<ObjectStore> explicit_store;
  ObjectStore* store = store_.get();
  std::vector<int64_t> candidates;
  if (cfg_.resume != "auto") {
    // The URI of one checkpoint folder: <store>/ckpt/step-NNNNNNNN
    const auto pos = cfg_.resume.rfind("/ckpt/step-");
    long long step = -1;
    if (pos == std::string::npos ||
        std::sscanf(cfg_.resume.c_str() + pos, "/ckpt/step-%lld", &step) != 1)
      throw InputError("checkpoint.resume=" + cfg_.resume +
                       ": expected auto, never or the URI of a checkpoint "
                       "folder (.../ckpt/step-NNNNNNNN)");
    explicit_store = open_store(cfg_.resume.substr(0, pos), cfg_.retry_seconds);
    store = explicit_store.get();
    candidates.push_back(step);
  } else {
    // Rank 0 lists; everyone tries the same candidates in the same order.
    std::string list;
    if (root) {
      for (const auto& l : list_checkpoints(*store))
        if (l.complete) list += std::to_string(l.step) + " ";
    }
    uint64_t size = list.size();
    comm_->broadcast(&size, sizeof size, 0);
    list.resize(size);
    comm_->broadcast(list.data(), size, 0);
    for (size_t p = 0; p < list.size();) {
      size_t next = list.find(' ', p);
      candidates.push_back(std::stoll(list.substr(p, next - p)));
      p = next + 1;
    }
    std::sort(candidates.rbegin(), candidates.rend());
  }
  for (int64_t step : candidates) {
    std::string state, error;
    Manifest m;
    try {
      m = read_checkpoint(*store, step, &state);
      std::string why;
      if (!same_layout(m.tensors, layout_, &why) || m.state_bytes != state_bytes_ ||
          m.optimizer != optimizer_)
        throw InputError(
            "checkpoint " + store->uri() + "/" + checkpoint_folder(step) +
            " does not fit this model and optimizer (" +
            (why.empty() ? "optimizer " + m.optimizer + " or state size differs" : why) +
            "); use another checkpoint.uri or checkpoint.resume=never");
    } catch (const InputError&) {
      throw;
    } catch (const std::exception& e) {
      error = e.what();
    }
    double failures = error.empty() ? 0 : 1;
    comm_->allreduce_sum(&failures, 1);
    if (failures == 0) {
      copy_range(0, state_bytes_, state.data(), true);
      if (root)
        spdlog::info("resumed from {}/{} (step {}, written by {} rank(s))", store->uri(),
                     checkpoint_folder(step), step, m.world_size);
      {
        auto lock = worker_.lock();
        last_committed_ = step;
      }
      return m.position;
    }
    if (!error.empty())
      spdlog::warn("checkpoint {} is unusable: {}", checkpoint_folder(step), error);
    if (cfg_.resume != "auto")
      throw StoreError("checkpoint.resume=" + cfg_.resume +
                       ": cannot load it: " + (error.empty() ? "another rank failed" : error));
    if (root) spdlog::warn("falling back to the checkpoint before {}", checkpoint_folder(step));
  }
  if (root && !candidates.empty())
    spdlog::warn("no usable checkpoint in {}: starting from scratch", store->uri());
  return std::nullopt;
}

}  // namespace tern
