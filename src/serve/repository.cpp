#include "tern/serve/repository.h"

#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <spdlog/spdlog.h>

#include "tern/base/error.h"
#include "tern/serve/fault_injection.h"

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

}  // namespace

ControlMode parse_control_mode(const std::string& text) {
  if (text == "none") return ControlMode::none;
  if (text == "poll") return ControlMode::poll;
  if (text == "explicit") return ControlMode::explicit_;
  throw InputError("model control mode '" + text + "': expected none, poll or explicit");
}

const char* control_mode_name(ControlMode mode) {
  switch (mode) {
    case ControlMode::none:
      return "none";
    case ControlMode::explicit_:
      return "explicit";
    case ControlMode::poll:
      break;
  }
  return "poll";
}

namespace {

// A request key's place in [0, 1): FNV-1a, then a 64-bit finaliser (splitmix64) so that keys
// differing in one character spread over the whole range.
double key_point(std::string_view key) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

}  // namespace

std::shared_ptr<LoadedVersion> ModelState::choose(
    const std::vector<std::pair<int64_t, double>>* weights,
    std::optional<std::string_view> key) const {
  if (versions.empty()) return nullptr;
  const auto& split = weights && !weights->empty() ? *weights : options.traffic;
  double total = 0;
  for (const auto& [v, w] : split)
    if (versions.count(v)) total += w;
  // A rollout's weights that name no loaded version: the model's own traffic, then the newest.
  if (total <= 0 && &split != &options.traffic) return choose(nullptr, key);
  if (total > 0) {
    double r;
    if (key) {
      r = key_point(*key) * total;
    } else {
      thread_local std::mt19937_64 rng{std::random_device{}()};
      r = std::uniform_real_distribution<double>(0, total)(rng);
    }
    std::shared_ptr<LoadedVersion> last;
    for (const auto& [v, w] : split) {
      auto it = versions.find(v);
      if (it == versions.end() || w <= 0) continue;
      if (r < w) return it->second;
      r -= w;
      last = it->second;
    }
    return last;  // r landed on the total through rounding
  }
  return versions.rbegin()->second;
}

ModelRepository::ModelRepository(RepositoryOptions options, StatsRegistry& stats,
                                 ModelLoader loader)
    : options_(std::move(options)),
      stats_(stats),
      loader_(std::move(loader)),
      snapshot_(std::make_shared<Snapshot>()) {
  const StoreUri uri = StoreUri::parse(options_.uri, "server.model_repository=" + options_.uri);
  if (uri.kind == StoreUri::Kind::s3) {
    store_ = open_store(uri, options_.retry_seconds);
    std::string pattern = (fs::temp_directory_path() / "tern-serve-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw std::runtime_error("cannot make a temporary folder for model downloads: " + pattern);
    temp_dir_ = pattern;
  } else {
    local_root_ = uri.path;
    if (!fs::is_directory(local_root_))
      throw InputError("model repository '" + uri.text + "' is not a folder");
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
  if (!options.fault.control.empty()) {
    // "{version}" in the path gives each version a control file of its own.
    std::string control_path = options.fault.control;
    for (size_t at; (at = control_path.find("{version}")) != std::string::npos;)
      control_path.replace(at, 9, std::to_string(version));
    spdlog::warn("model '{}' version {}: faults on command from {}", model, version, control_path);
    auto control = std::make_shared<FaultControl>(control_path);
    for (auto& fn : loaded.instances)
      fn = with_faults(std::move(fn), control, loaded.schema.output_features);
  }

  auto lv = std::make_shared<LoadedVersion>();
  lv->model = model;
  lv->version = version;
  lv->schema = std::move(loaded.schema);
  lv->schema.max_batch_size = options.max_batch_size;
  lv->options = options;
  lv->instances = instances;
  lv->stats = stats_.get(model, version);
  lv->monitor = std::make_shared<VersionMonitor>(model, version, loaded.reference,
                                                 options.monitoring, lv->schema, instances);
  lv->signature = signature;
  lv->breaker = std::make_unique<CircuitBreaker>(
      options.breaker, "model '" + model + "' version " + std::to_string(version));
  BatcherOptions batching{options.max_batch_size, options.max_queue_delay_us,
                          options.max_queue_size, options.priority_levels};
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
  const std::string config_sig = track.override_options ? track.override_signature
                                 : listing.config       ? signature(*listing.config)
                                                        : "";
  if (track.override_options && config_sig != track.config_signature) {
    track.options = *track.override_options;
    track.config_error.clear();
    track.config_signature = config_sig;
  } else if (config_sig != track.config_signature) {
    const std::string where =
        "model '" + name + "': " + (listing.config ? listing.config->key : "");
    try {
      if (listing.config)
        track.options = parse_model_options(store_->get(listing.config->key), where);
      else
        track.options = ModelOptions();
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
    if (!tracks_.count(name)) tracks_[name].wanted = wanted_at_startup(name);
    if (!tracks_[name].wanted) {
      // Explicit mode: found, listed in the index, loaded only when asked.
      tracks_[name].found.clear();
      for (const auto& [v, file] : l.files) tracks_[name].found.push_back(v);
      continue;
    }
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

bool ModelRepository::wanted_at_startup(const std::string& name) const {
  if (options_.mode != ControlMode::explicit_) return true;
  for (const auto& m : options_.startup_models)
    if (m == "*" || m == name) return true;
  return false;
}

void ModelRepository::swap_in(const std::string& name, std::shared_ptr<ModelState> state) {
  const auto current = snapshot();
  auto next = std::make_shared<Snapshot>(*current);
  auto it = current->find(name);
  retire(it == current->end() ? nullptr : it->second, state.get());
  if (state)
    (*next)[name] = std::move(state);
  else
    next->erase(name);
  std::lock_guard lock(snapshot_mu_);
  snapshot_ = std::move(next);
}

void ModelRepository::load_model(const std::string& name, const std::optional<std::string>& config,
                                 std::optional<int64_t> version) {
  std::lock_guard poll_lock(poll_mu_);
  const auto listing = list_repository();
  auto found = listing.find(name);
  if (found == listing.end())
    throw InputError("failed to load '" + name + "': no model '" + name +
                     "' in the repository (expected " + name + "/<version>/model.h5)");
  ModelTrack& track = tracks_[name];
  const bool was_wanted = track.wanted;
  if (config || version) {
    const std::string where = "load request for '" + name + "'";
    ModelOptions opts;
    if (config) {
      const auto first = config->find_first_not_of(" \t\r\n");
      opts = first != std::string::npos && (*config)[first] == '{'
                 ? parse_triton_config(*config, where)
                 : parse_model_options(*config, where);
    } else if (found->second.config) {
      opts = parse_model_options(store_->get(found->second.config->key), name + "/config.ini");
    }
    if (version) {
      if (!found->second.files.count(*version))
        throw InputError("failed to load '" + name + "': the repository has no version " +
                         std::to_string(*version));
      opts.policy = VersionPolicy{VersionPolicy::Kind::specific, 1, {*version}};
    }
    track.override_options = opts;
    track.override_signature =
        "load:" + config.value_or("") + ":" + (version ? std::to_string(*version) : std::string());
  } else {
    track.override_options.reset();
    track.override_signature.clear();
  }
  track.wanted = true;
  const auto current = snapshot();
  auto it = current->find(name);
  auto live = it == current->end() ? nullptr : it->second;
  auto state = update_model(name, found->second, live);
  if (state) swap_in(name, state);
  publish_index();
  collect_retired();
  const auto now = snapshot();
  auto served = now->find(name);
  if (served == now->end() || served->second->versions.empty() ||
      (state == nullptr && !track.config_error.empty())) {
    std::string why = track.config_error;
    for (const auto& [v, vt] : track.versions)
      if (vt.failed)
        why += (why.empty() ? "" : "; ") + ("version " + std::to_string(v) + ": " + vt.reason);
    if (served == now->end()) track.wanted = was_wanted;
    throw InputError("failed to load '" + name +
                     "': " + (why.empty() ? "no version to serve" : why));
  }
}

void ModelRepository::unload_model(const std::string& name) {
  std::lock_guard poll_lock(poll_mu_);
  const auto current = snapshot();
  auto it = current->find(name);
  if (it == current->end()) throw InputError("failed to unload '" + name + "': it is not loaded");
  spdlog::info("model '{}': unloading; requests in flight finish first", name);
  auto& track = tracks_[name];
  track.wanted = false;
  track.override_options.reset();
  track.override_signature.clear();
  track.config_signature = "unloaded";  // a later load reads config.ini again
  swap_in(name, nullptr);
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
      } else if (!track.wanted) {
        entry["state"] = "UNAVAILABLE";
        entry["reason"] = "unloaded";
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
  const bool scan = options_.mode == ControlMode::poll && seconds > 0;
  poller_.start([this, seconds, scan] {
    // Without scans, the thread still stops the versions unloaded or replaced once no request
    // holds them.
    const auto period = std::chrono::duration<double>(scan ? seconds : 0.2);
    auto lock = poller_.lock();
    while (poller_.wait_for(lock, period)) {
      lock.unlock();
      try {
        if (scan) {
          poll();
        } else {
          std::lock_guard poll_lock(poll_mu_);
          collect_retired();
        }
      } catch (const std::exception& e) {
        spdlog::error("model repository poll failed: {}", e.what());
      }
      lock.lock();
    }
  });
}

void ModelRepository::stop() {
  poller_.stop();
  std::lock_guard poll_lock(poll_mu_);
  for (const auto& [name, state] : *snapshot())
    for (const auto& [v, lv] : state->versions) lv->batcher->stop();
  for (const auto& lv : retired_) lv->batcher->stop();
}

}  // namespace tern::serve
