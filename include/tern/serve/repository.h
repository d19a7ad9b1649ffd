#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/base/worker.h"
#include "tern/io/store.h"
#include "tern/serve/circuit_breaker.h"
#include "tern/serve/metrics.h"
#include "tern/serve/model_adapter.h"
#include "tern/serve/model_options.h"
#include "tern/serve/protocol.h"
#include "tern/serve/scheduler.h"

// The model repository, in Triton's layout: <repo>/<model>/<version>/model.h5 with an optional
// <repo>/<model>/config.ini, on local disk or in an object store. Polling loads new and changed
// versions, checks them before they take traffic, and swaps them in while requests in flight
// keep the version they started with.
namespace tern::serve {

// A version that passed its checks and takes traffic.
struct LoadedVersion {
  std::string model;
  int64_t version = 0;
  ModelSchema schema;
  ModelOptions options;
  int64_t instances = 0;  // workers, each with its own copy of the model
  std::shared_ptr<VersionStats> stats;
  std::shared_ptr<VersionMonitor> monitor;  // input checks and drift
  std::unique_ptr<Batcher> batcher;
  std::unique_ptr<CircuitBreaker> breaker;
  std::string signature;  // of the file it was loaded from (size, mtime)
};

struct ModelState {
  std::string name;
  ModelOptions options;
  std::string config_signature;
  std::map<int64_t, std::shared_ptr<LoadedVersion>> versions;  // ready ones
  // For a request that names no version: by `weights` (a rollout's), else options.traffic's,
  // among the ready versions, else the newest. A request key (sticky_header) is hashed onto the
  // weights, so one key keeps one version while the weights stay; without one the pick is
  // random. Null when none is ready.
  std::shared_ptr<LoadedVersion> choose(
      const std::vector<std::pair<int64_t, double>>* weights = nullptr,
      std::optional<std::string_view> key = std::nullopt) const;
};

using Snapshot = std::map<std::string, std::shared_ptr<const ModelState>>;

// Triton's model control modes. none: every model is loaded at startup and the repository is
// never read again; poll: it is scanned every poll period for changes; explicit: only the models
// named at startup (or all, with "*") are loaded, and the control API loads and unloads them.
enum class ControlMode { none, poll, explicit_ };
ControlMode parse_control_mode(const std::string& text);  // InputError naming the choices
const char* control_mode_name(ControlMode mode);

struct RepositoryOptions {
  std::string uri;  // a folder, file://PATH or s3://BUCKET/PREFIX
  int64_t default_instances = 2;
  double retry_seconds = 30;  // of one object store operation
  ControlMode mode = ControlMode::poll;
  std::vector<std::string> startup_models;  // explicit mode: loaded at startup ("*": all)
};

class ModelRepository {
 public:
  ModelRepository(RepositoryOptions options, StatsRegistry& stats,
                  ModelLoader loader = load_export);
  ~ModelRepository();
  ModelRepository(const ModelRepository&) = delete;
  ModelRepository& operator=(const ModelRepository&) = delete;

  // One scan of the repository: loads, checks and swaps in what changed. A listing that fails
  // is logged and changes nothing, unless `throw_on_list_error` (the first scan at startup).
  void poll(bool throw_on_list_error = false);
  // Polls every `seconds` on a thread of its own until stop().
  void start_polling(double seconds);
  // Stops polling, then every version's workers (after their queues have run).
  void stop();

  // The control API (explicit mode): loads or reloads a model from the repository, with
  // `config` (config.ini text, or Triton's JSON model configuration) in place of its
  // config.ini until the next load without one, and only `version` if given. InputError naming
  // why when it is not in the repository or no version loads; the old versions keep serving.
  void load_model(const std::string& name, const std::optional<std::string>& config,
                  std::optional<int64_t> version);
  // Takes a model out of service: new requests no longer find it, requests in flight finish,
  // then its workers stop. InputError if it is not loaded.
  void unload_model(const std::string& name);
  ControlMode mode() const { return options_.mode; }

  std::shared_ptr<const Snapshot> snapshot() const;
  // Triton's repository index: every model version found, with its state and why.
  nlohmann::json index(bool ready_only) const;
  uint64_t load_failures() const { return load_failures_.load(); }

 private:
  struct VersionTrack {
    std::string signature;         // of the file last tried
    std::string config_signature;  // of the config it was tried with
    bool failed = false;
    std::string reason;
  };
  struct ModelTrack {
    std::string config_signature;
    std::string config_error;  // non-empty: config.ini does not parse
    ModelOptions options;
    std::vector<int64_t> found;  // version folders with a model.h5, as last listed
    std::map<int64_t, VersionTrack> versions;
    bool wanted = true;  // explicit mode: loaded through the control API (or at startup)
    std::optional<ModelOptions> override_options;  // a load request's config
    std::string override_signature;
  };
  struct Listing {
    std::optional<ObjectInfo> config;
    std::map<int64_t, ObjectInfo> files;
  };

  std::map<std::string, Listing> list_repository();
  std::string signature(const ObjectInfo& info) const;
  // The model's next state; null to leave it as it is.
  std::shared_ptr<ModelState> update_model(const std::string& name, const Listing& listing,
                                           const std::shared_ptr<const ModelState>& live);
  std::shared_ptr<LoadedVersion> load_version(const std::string& model, int64_t version,
                                              const ObjectInfo& file, const ModelOptions& options,
                                              const std::string& signature);
  void retire(const std::shared_ptr<const ModelState>& old, const ModelState* next);
  void collect_retired();
  void publish_index();
  void swap_in(const std::string& name, std::shared_ptr<ModelState> state);  // poll_mu_ held
  bool wanted_at_startup(const std::string& name) const;

  RepositoryOptions options_;
  StatsRegistry& stats_;
  ModelLoader loader_;
  std::unique_ptr<ObjectStore> store_;
  std::string local_root_;  // empty for remote stores
  std::string temp_dir_;    // downloads from remote stores
  std::atomic<uint64_t> load_failures_{0};

  mutable std::mutex snapshot_mu_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::map<std::string, ModelTrack> tracks_;  // poll thread only
  // Versions out of the snapshot that requests may still hold; stopped once no one does.
  std::vector<std::shared_ptr<LoadedVersion>> retired_;

  mutable std::mutex index_mu_;
  nlohmann::json index_ = nlohmann::json::array();

  std::mutex poll_mu_;  // one scan at a time
  BackgroundWorker poller_;
};

}  // namespace tern::serve
