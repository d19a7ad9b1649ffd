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

#include "tern/serve/metrics.h"
#include "tern/serve/protocol.h"
#include "tern/serve/scheduler.h"
#include "tern/store.h"

// The model repository, in Triton's layout: <repo>/<model>/<version>/model.h5 with an optional
// <repo>/<model>/config.ini, on local disk or in an object store. Polling loads new and changed
// versions, checks them before they take traffic, and swaps them in while requests in flight
// keep the version they started with.
namespace tern::serve {

struct VersionPolicy {
  enum class Kind { latest, all, specific };
  Kind kind = Kind::latest;
  int64_t latest = 1;             // latest:N
  std::vector<int64_t> versions;  // specific:1,3
};

// A model's config.ini.
struct ModelOptions {
  VersionPolicy policy;
  int64_t max_batch_size = 64;
  int64_t max_queue_delay_us = 0;
  int64_t max_queue_size = 1024;
  int64_t instances = 0;  // workers per version; 0: the server's [server] workers
  std::vector<std::pair<int64_t, double>> traffic;  // (version, weight); empty: the newest
  bool cache = false;
};

// Parses config.ini text; InputError naming `where`, the key and the value otherwise.
ModelOptions parse_model_options(const std::string& text, const std::string& where);
// The versions the policy serves, of `available` (any order), newest first.
std::vector<int64_t> policy_candidates(const VersionPolicy& policy,
                                       const std::vector<int64_t>& available);
nlohmann::json policy_json(const VersionPolicy& policy);

// A version that passed its checks and takes traffic.
struct LoadedVersion {
  std::string model;
  int64_t version = 0;
  ModelSchema schema;
  ModelOptions options;
  int64_t instances = 0;  // workers, each with its own copy of the model
  std::shared_ptr<VersionStats> stats;
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

// A model file made ready to run: its schema and one predict function per worker.
struct LoadedModel {
  ModelSchema schema;
  std::vector<PredictFn> instances;
};
// Opens the file at `path`, checks it and warms up `instances` copies on `warmup_rows` rows of
// zeros; throws naming what is wrong.
using ModelLoader =
    std::function<LoadedModel(const std::string& path, int64_t instances, int64_t warmup_rows)>;
// The default loader: an exported model.h5 through InferenceModel.
LoadedModel load_export(const std::string& path, int64_t instances, int64_t warmup_rows);

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
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread poller_;
};

}  // namespace tern::serve
