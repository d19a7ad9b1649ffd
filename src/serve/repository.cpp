#include "tern/serve/repository.h"

#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "tern/error.h"
#include "tern/export.h"

namespace fs = std::filesystem;

namespace tern::serve {

namespace {

// Version folders are positive integers written plainly ("01" would alias "1").
std::optional<int64_t> version_number(std::string_view s) {
  int64_t v = 0;
  if (s.empty() || s.front() == '0') return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t slash; (slash = key.find('/', start)) != std::string::npos; start = slash + 1)
    parts.push_back(key.substr(start, slash - start));
  parts.push_back(key.substr(start));
  return parts;
}

std::string versions_text(const std::map<int64_t, std::shared_ptr<LoadedVersion>>& versions) {
  std::string out;
  for (const auto& [v, lv] : versions) {
    if (!out.empty()) out += ", ";
    out += std::to_string(v);
  }
  return out.empty() ? "none" : out;
}

// At most this many rows of zeros warm each worker up: enough to size its buffers for the
// batches it will see, without a huge allocation for a generous max_batch_size.
constexpr int64_t kMaxWarmupRows = 4096;

// Token models: whether the logits at a position depend on later tokens (they must not, for
// right-padding to leave them unchanged). Rows that share a prefix of k tokens and differ after
// it must agree on the logits of the first k positions, for up to 16 values of k.
bool looks_causal(InferenceModel& m, int64_t context, int64_t vocab, int64_t width) {
  if (context < 2 || vocab < 2) return true;
  const int64_t cuts = std::min<int64_t>(context - 1, 16);
  const int64_t rows = cuts + 1;
  std::vector<int32_t> ids(static_cast<size_t>(rows * context));
  std::vector<int64_t> cut(static_cast<size_t>(rows), context);
  for (int64_t p = 0; p < context; ++p) ids[p] = static_cast<int32_t>((p * 7 + 3) % vocab);
  for (int64_t r = 1; r < rows; ++r) {
    cut[r] = 1 + (r - 1) * (context - 2) / std::max<int64_t>(cuts - 1, 1);
    for (int64_t p = 0; p < context; ++p)
      ids[r * context + p] = p < cut[r] ? ids[p] : static_cast<int32_t>((ids[p] + r) % vocab);
  }
  std::vector<float> logits(static_cast<size_t>(rows * context * width));
  m.predict_tokens(ids.data(), rows, logits.data());
  for (int64_t r = 1; r < rows; ++r)
    for (int64_t i = 0; i < cut[r] * width; ++i) {
      const float a = logits[i], b = logits[r * context * width + i];
      if (!(std::fabs(a - b) <= 1e-4f * (1.0f + std::fabs(a)))) return false;
    }
  return true;
}

// Runs a token model on the protocol's rows: token ids as floats, right-padded with kTokenPad.
// One per worker (its buffers are not shared).
struct TokenRunner {
  std::shared_ptr<InferenceModel> model;
  int64_t context = 0;
  bool last_position = false;  // a language model: the logits at each row's last token
  std::vector<int32_t> ids;
  std::vector<int64_t> lengths;

  void operator()(const float* x, int64_t rows, float* out) {
    ids.resize(static_cast<size_t>(rows * context));
    lengths.assign(static_cast<size_t>(rows), context);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t p = 0; p < context; ++p) {
        const float v = x[r * context + p];
        if (v < 0 && lengths[r] == context) lengths[r] = p;
        // Padding becomes id 0: any valid id does, as later positions are not seen.
        ids[r * context + p] = v < 0 ? 0 : static_cast<int32_t>(v);
      }
    if (last_position)
      model->predict_last(ids.data(), lengths.data(), rows, out);
    else
      model->predict_tokens(ids.data(), rows, out);
  }
};

// Float carries the ids through the batcher and the cache: exact up to 2^24.
constexpr int64_t kMaxVocab = int64_t{1} << 24;

}  // namespace

LoadedModel load_export(const std::string& path, int64_t instances, int64_t warmup_rows) {
  std::unique_ptr<InferenceModel> first = InferenceModel::load(path);
  const ExportInfo& info = first->info();
  LoadedModel out;
  out.schema.input_name = info.input_name;
  out.schema.input_shape = info.input_shape;
  out.schema.output_name = info.output_name;
  out.schema.output_features = first->output_features();
  out.schema.labels = info.labels;
  out.schema.input_datatype = info.input_datatype;
  ModelSchema& s = out.schema;
  if (s.input_datatype != "FP32" && s.input_datatype != "INT32")
    throw InputError("input datatype '" + s.input_datatype +
                     "': tern-serve serves FP32 features or INT32 token ids");
  bool last_position = false;
  if (s.tokens()) {
    // A language model: [T] token ids in, [T, vocab] logits out, served as the logits of the
    // next token after each row's last one ([vocab] per row) for rows of 1 to T ids. Another
    // token model (a sequence classifier) takes exactly T ids and answers its whole output.
    s.vocab = first->vocab_size();
    if (s.input_shape.size() != 1 || s.vocab < 1)
      throw InputError("INT32 input " + shape_str(s.input_shape) +
                       ": a token model takes [positions] ids into an embedding layer");
    if (s.vocab > kMaxVocab)
      throw InputError("vocabulary of " + std::to_string(s.vocab) + " tokens: at most " +
                       std::to_string(kMaxVocab) + " can be served");
    const int64_t context = s.input_shape[0];
    const Shape& os = first->output_shape();
    last_position = os.size() == 2 && os[0] == context;
    s.min_tokens = context;
    if (last_position) {
      s.output_features = os[1];
      if (looks_causal(*first, context, s.vocab, os[1])) {
        s.min_tokens = 1;
      } else {
        spdlog::warn(
            "'{}': the logits at a position depend on later tokens (not a causal "
            "model): requests must carry exactly {} tokens per row",
            path, context);
      }
    }
  }
  if (s.input_name.empty() || s.output_name.empty() || s.input_name == s.output_name)
    throw InputError("input name '" + s.input_name + "' and output name '" + s.output_name +
                     "' must be non-empty and differ");
  if (s.input_features() < 1 || s.output_features < 1)
    throw InputError("input shape " + shape_str(s.input_shape) + " and " +
                     std::to_string(s.output_features) + " outputs: both need elements");
  if (!s.labels.empty() && static_cast<int64_t>(s.labels.size()) != s.output_features)
    throw InputError(std::to_string(s.labels.size()) + " labels for " +
                     std::to_string(s.output_features) + " outputs");

  std::vector<std::shared_ptr<InferenceModel>> models;
  models.push_back(std::move(first));
  for (int64_t i = 1; i < instances; ++i) models.push_back(models.front()->clone());
  const int64_t rows = std::clamp<int64_t>(warmup_rows, 1, kMaxWarmupRows);
  // Zeros: features of 0, or rows of token 0 as long as the context.
  std::vector<float> zeros(static_cast<size_t>(rows * s.input_features()), 0.0f);
  std::vector<float> result(static_cast<size_t>(rows * s.output_features));
  for (auto& m : models) {
    PredictFn predict;
    if (s.tokens()) {
      auto runner = std::make_shared<TokenRunner>();
      runner->model = m;
      runner->context = s.input_features();
      runner->last_position = last_position;
      predict = [runner](const float* x, int64_t n, float* y) { (*runner)(x, n, y); };
    } else {
      predict = [m](const float* x, int64_t n, float* y) { m->predict(x, n, y); };
    }
    predict(zeros.data(), rows, result.data());
    for (float v : result)
      if (!std::isfinite(v))
        throw InputError("warm-up inference on zeros gives non-finite outputs (" +
                         std::to_string(v) + ")");
    out.instances.push_back(std::move(predict));
  }
  return out;
}

ModelRepository::ModelRepository(RepositoryOptions options, StatsRegistry& stats,
                                 ModelLoader loader)
    : options_(std::move(options)),
      stats_(stats),
      loader_(std::move(loader)),
      snapshot_(std::make_shared<Snapshot>()) {
  const std::string& uri = options_.uri;
  if (uri.rfind("s3://", 0) == 0) {
    store_ = open_store(uri, options_.retry_seconds);
    std::string pattern = (fs::temp_directory_path() / "tern-serve-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw std::runtime_error("cannot make a temporary folder for model downloads: " + pattern);
    temp_dir_ = pattern;
  } else {
    local_root_ = uri.rfind("file://", 0) == 0 ? uri.substr(7) : uri;
    if (local_root_.empty() || !fs::is_directory(local_root_))
      throw InputError("model repository '" + uri + "' is not a folder");
    store_ = open_local_store(local_root_);
  }
}

ModelRepository::~ModelRepository() {
  stop();
  if (!temp_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(temp_dir_, ec);
  }
}

std::shared_ptr<const Snapshot> ModelRepository::snapshot() const {
  std::lock_guard lock(snapshot_mu_);
  return snapshot_;
}

std::string ModelRepository::signature(const ObjectInfo& info) const {
  if (!local_root_.empty()) {
    // Nanosecond mtime and inode: a file replaced twice in one second is still noticed.
    struct stat st;
    const std::string path = local_root_ + "/" + info.key;
    if (::stat(path.c_str(), &st) == 0)
      return std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino);
  }
  return std::to_string(info.size) + ":" + std::to_string(info.mtime);
}

std::map<std::string, ModelRepository::Listing> ModelRepository::list_repository() {
  std::map<std::string, Listing> out;
  for (const ObjectInfo& obj : store_->list("")) {
    const auto parts = split_key(obj.key);
    if (parts[0].empty() || parts[0].front() == '.') continue;
    if (parts.size() == 2 && parts[1] == "config.ini") {
      out[parts[0]].config = obj;
    } else if (parts.size() == 3 && parts[2] == "model.h5") {
      if (auto v = version_number(parts[1])) out[parts[0]].files[*v] = obj;
    }
  }
  return out;
}

std::shared_ptr<LoadedVersion> ModelRepository::load_version(const std::string& model,
                                                             int64_t version,
                                                             const ObjectInfo& file,
                                                             const ModelOptions& options,
                                                             const std::string& signature) {
  std::string path;
  if (!local_root_.empty()) {
    path = local_root_ + "/" + file.key;
  } else {
    // InferenceModel reads files; an object store's model is copied to local disk first and
    // removed once loaded (the model lives in memory from then on).
    path = temp_dir_ + "/" + model + "-" + std::to_string(version) + ".h5";
    const std::string bytes = store_->get(file.key);
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) throw std::runtime_error("cannot write the downloaded model to " + path);
  }
  const int64_t instances = options.instances ? options.instances : options_.default_instances;
  LoadedModel loaded;
  try {
    loaded = loader_(path, instances, options.max_batch_size);
  } catch (const std::exception& e) {
    if (temp_dir_.empty()) throw;
    fs::remove(path);
    // Name the object, not the temporary copy the message speaks of.
    throw InputError(store_->uri() + "/" + file.key + " (downloaded): " + e.what());
  }
  if (!temp_dir_.empty()) fs::remove(path);

  auto lv = std::make_shared<LoadedVersion>();
  lv->model = model;
  lv->version = version;
  lv->schema = std::move(loaded.schema);
  lv->schema.max_batch_size = options.max_batch_size;
  lv->options = options;
  lv->instances = instances;
  lv->stats = stats_.get(model, version);
  lv->signature = signature;
  BatcherOptions batching{options.max_batch_size, options.max_queue_delay_us,
                          options.max_queue_size};
  lv->batcher = std::make_unique<Batcher>(std::move(loaded.instances), lv->schema.input_features(),
                                          lv->schema.output_features, batching, lv->stats);
  spdlog::info("model '{}' version {}: loaded and checked ({} {} -> {} {}, {} worker(s))", model,
               version, lv->schema.input_datatype, shape_str(lv->schema.input_shape),
               lv->schema.output_features, lv->schema.output_name, instances);
  return lv;
}

std::shared_ptr<ModelState> ModelRepository::update_model(
    const std::string& name, const Listing& listing,
    const std::shared_ptr<const ModelState>& live) {
  ModelTrack& track = tracks_[name];
  track.found.clear();
  for (const auto& [v, file] : listing.files) track.found.push_back(v);
  const std::string config_sig = listing.config ? signature(*listing.config) : "";
  if (config_sig != track.config_signature) {
    const std::string where =
        "model '" + name + "': " + (listing.config ? listing.config->key : "");
    try {
      track.options = listing.config ? parse_model_options(store_->get(listing.config->key), where)
                                     : ModelOptions{};
      track.config_error.clear();
      track.config_signature = config_sig;
    } catch (const InputError& e) {
      track.config_error = e.what();
      track.config_signature = config_sig;  // not retried until the file changes
      ++load_failures_;
      spdlog::error("{}; {}", e.what(),
                    live ? "the loaded versions keep serving with the old config" : "not loaded");
    } catch (const std::exception& e) {  // the store: tried again at the next poll
      spdlog::warn("model '{}': cannot read config.ini: {}", name, e.what());
      return nullptr;
    }
  }
  if (!track.config_error.empty()) return nullptr;

  const ModelOptions& opts = track.options;
  const bool config_changed = !live || live->config_signature != track.config_signature;
  std::map<int64_t, std::shared_ptr<LoadedVersion>> next;
  bool refused = false;
  for (int64_t v : policy_candidates(opts.policy, track.found)) {
    if (opts.policy.kind == VersionPolicy::Kind::latest &&
        static_cast<int64_t>(next.size()) >= opts.policy.latest)
      break;
    const ObjectInfo& file = listing.files.at(v);
    const std::string sig = signature(file);
    if (live && !config_changed) {
      auto it = live->versions.find(v);
      if (it != live->versions.end() && it->second->signature == sig) {
        next[v] = it->second;
        continue;
      }
    }
    VersionTrack& vt = track.versions[v];
    if (vt.failed && vt.signature == sig && vt.config_signature == track.config_signature) {
      refused = true;
      continue;  // refused before, and neither the file nor the config changed since
    }
    vt = VersionTrack{sig, track.config_signature, false, ""};
    try {
      next[v] = load_version(name, v, file, opts, sig);
    } catch (const std::exception& e) {
      vt.failed = true;
      vt.reason = e.what();
      // A store that failed (after its retries) is tried again at the next poll; a bad file is
      // not, until it changes.
      if (dynamic_cast<const StoreError*>(&e)) vt.signature.clear();
      refused = true;
      ++load_failures_;
      const bool old_serves = live && live->versions.count(v);
      spdlog::error("model '{}' version {}: refused: {}{}", name, v, e.what(),
                    old_serves ? "; the version loaded before keeps serving" : "");
      // A changed file that fails keeps its old, working copy in service.
      if (old_serves && !config_changed) next[v] = live->versions.at(v);
    }
  }
  std::erase_if(track.versions, [&](const auto& kv) { return !listing.files.count(kv.first); });

  // Nothing loads under a new config or a new set of files: the old state serves on.
  if (next.empty() && refused && live && !live->versions.empty()) return nullptr;
  if (live && !config_changed && next == live->versions) return nullptr;
  auto state = std::make_shared<ModelState>();
  state->name = name;
  state->options = opts;
  state->config_signature = track.config_signature;
  state->versions = std::move(next);
  spdlog::info("model '{}': serving version(s) {}", name, versions_text(state->versions));
  return state;
}

void ModelRepository::retire(const std::shared_ptr<const ModelState>& old, const ModelState* next) {
  if (!old) return;
  for (const auto& [v, lv] : old->versions) {
    auto it = next ? next->versions.find(v) : decltype(old->versions.end()){};
    if (next && it != next->versions.end() && it->second == lv) continue;
    retired_.push_back(lv);
  }
}

void ModelRepository::collect_retired() {
  // A version out of the snapshot gains no new holders, so a use count of one (this list) means
  // no request holds it: its queue is empty and its workers can stop.
  std::erase_if(retired_, [](const std::shared_ptr<LoadedVersion>& lv) {
    if (lv.use_count() > 1) return false;
    lv->batcher->stop();
    spdlog::info("model '{}' version {}: unloaded", lv->model, lv->version);
    return true;
  });
}

void ModelRepository::poll(bool throw_on_list_error) {
  std::lock_guard poll_lock(poll_mu_);
  std::map<std::string, Listing> listing;
  try {
    listing = list_repository();
  } catch (const std::exception& e) {
    if (throw_on_list_error) throw;
    spdlog::warn("model repository {}: listing failed, nothing changes: {}", options_.uri,
                 e.what());
    collect_retired();
    return;
  }
  const auto current = snapshot();
  auto next = std::make_shared<Snapshot>(*current);
  bool changed = false;
  for (const auto& [name, l] : listing) {
    auto it = current->find(name);
    auto live = it == current->end() ? nullptr : it->second;
    if (auto state = update_model(name, l, live)) {
      retire(live, state.get());
      (*next)[name] = std::move(state);
      changed = true;
    }
  }
  for (const auto& [name, state] : *current) {
    if (listing.count(name)) continue;
    spdlog::info("model '{}': gone from the repository, unloading", name);
    retire(state, nullptr);
    next->erase(name);
    changed = true;
  }
  std::erase_if(tracks_, [&](const auto& kv) { return !listing.count(kv.first); });
  if (changed) {
    std::lock_guard lock(snapshot_mu_);
    snapshot_ = std::move(next);
  }
  publish_index();
  collect_retired();
}

void ModelRepository::publish_index() {
  const auto snap = snapshot();
  nlohmann::json index = nlohmann::json::array();
  for (const auto& [name, track] : tracks_) {
    auto it = snap->find(name);
    const ModelState* state = it == snap->end() ? nullptr : it->second.get();
    if (!track.config_error.empty() && !state)
      index.push_back({{"name", name}, {"state", "UNAVAILABLE"}, {"reason", track.config_error}});
    for (int64_t v : track.found) {
      nlohmann::json entry = {{"name", name}, {"version", std::to_string(v)}};
      auto vt = track.versions.find(v);
      if (state && state->versions.count(v)) {
        entry["state"] = "READY";
      } else if (vt != track.versions.end() && vt->second.failed) {
        entry["state"] = "UNAVAILABLE";
        entry["reason"] = vt->second.reason;
      } else {
        entry["state"] = "UNAVAILABLE";
        entry["reason"] = "not served under version_policy";
      }
      index.push_back(std::move(entry));
    }
  }
  std::lock_guard lock(index_mu_);
  index_ = std::move(index);
}

nlohmann::json ModelRepository::index(bool ready_only) const {
  std::lock_guard lock(index_mu_);
  if (!ready_only) return index_;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : index_)
    if (e.value("state", "") == "READY") out.push_back(e);
  return out;
}

void ModelRepository::start_polling(double seconds) {
  poller_ = std::thread([this, seconds] {
    const auto period = std::chrono::duration<double>(seconds);
    std::unique_lock lock(stop_mu_);
    while (!stop_cv_.wait_for(lock, period, [&] { return stopping_; })) {
      lock.unlock();
      try {
        poll();
      } catch (const std::exception& e) {
        spdlog::error("model repository poll failed: {}", e.what());
      }
      lock.lock();
    }
  });
}

void ModelRepository::stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  std::lock_guard poll_lock(poll_mu_);
  for (const auto& [name, state] : *snapshot())
    for (const auto& [v, lv] : state->versions) lv->batcher->stop();
  for (const auto& lv : retired_) lv->batcher->stop();
}

}  // namespace tern::serve
