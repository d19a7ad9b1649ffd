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
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/base/worker.h"
#include "tern/io/store.h"
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
  std::string signature;  // of the file it was loaded from (size, mtime)
};

struct ModelState {
  std::string name;
  ModelOptions options;
  std::string config_signature;
  std::map<int64_t, std::shared_ptr<LoadedVersion>> versions;  // ready ones
  // For a request that names no version: by options.traffic's weights among the ready
  // versions, else the newest. Null when none is ready.
  std::shared_ptr<LoadedVersion> choose() const;
};

using Snapshot = std::map<std::string, std::shared_ptr<const ModelState>>;

struct RepositoryOptions {
  std::string uri;  // a folder, file://PATH or s3://BUCKET/PREFIX
  int64_t default_instances = 2;
  double retry_seconds = 30;  // of one object store operation
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
