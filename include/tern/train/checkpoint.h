#pragma once
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/base/worker.h"
#include "tern/compute/tensor.h"
#include "tern/dist/communicator.h"
#include "tern/dist/sharding.h"
#include "tern/io/store.h"
#include "tern/nn/model.h"

// Checkpoints that survive preemption (DESIGN.md section 5). A checkpoint is the flat state
// (the named buffers: parameters, optimizer moments) plus the step and data position, stored as
//   <uri>/ckpt/step-00001200/shard-00000-of-00004.bin   rank r: bytes [r*S/W, (r+1)*S/W)
//   <uri>/ckpt/step-00001200/MANIFEST.json             written last, by rank 0
// or, with ZeRO-1, each rank's slice of each buffer, the part of the state it owns:
//   <uri>/ckpt/step-00001200/optim.m.shard-00000-of-00004.bin
// The manifest lists the pieces with their offsets in the whole state, which is the same however
// it was written: any world size, with or without ZeRO, resumes from it.
// A folder without a manifest does not exist for resume.
namespace tern {

struct CheckpointConfig {
  std::string uri;              // path, file:// or s3://bucket/prefix; empty = no checkpoints
  int64_t every_steps = 0;      // 0 = only at the end and on preemption
  int64_t keep = 3;             // newest complete checkpoints kept
  int64_t keep_every = 0;       // also keep steps that are multiples of this; 0 = none
  bool async = true;            // upload in the background while training goes on
  double retry_seconds = 60;    // how long one store operation retries before the save fails
  std::string resume = "auto";  // auto | never | the URI of one checkpoint folder
  bool spot_notice = false;     // poll the AWS spot interruption notice
  std::string spot_url = "http://169.254.169.254";
  double spot_poll_seconds = 5;
};

// One named flat buffer of the state (f32), e.g. "params", "optim.m". Sharded (ZeRO-1): the
// tensor holds this rank's slice of the buffer alone, as the manager's FlatSharding cuts it.
struct StateBuffer {
  std::string name;
  Tensor tensor;
  bool sharded = false;
};

struct TrainingPosition {
  int64_t step = 0;          // optimizer steps done
  int64_t samples_seen = 0;  // training-stream position of the next batch
  double train_loss = 0;
};

struct ShardEntry {
  std::string key;  // relative to the checkpoint folder
  uint64_t offset = 0, size = 0;
  std::string xxh3;
};

struct Manifest {
  static constexpr const char* kFormat = "tern-checkpoint/1";
  TrainingPosition position;
  int world_size = 1;
  uint64_t state_bytes = 0;
  int64_t created = 0;                                    // unix seconds
  std::vector<std::pair<std::string, uint64_t>> buffers;  // name, bytes (in order)
  std::vector<ParamInfo> tensors;                         // layout of each buffer
  std::vector<ShardEntry> shards;
  std::string optimizer, config, config_hash, code_version;
  nlohmann::json model;  // what an export needs besides the weights (export_info_to_json)

  nlohmann::json to_json() const;
  // Throws InputError naming `where` on a malformed manifest.
  static Manifest parse(const std::string& text, const std::string& where);
};

// "ckpt/step-00001200"
std::string checkpoint_folder(int64_t step);

struct CheckpointListing {
  int64_t step = 0;
  bool complete = false;  // has a manifest
  uint64_t bytes = 0;     // all objects of the folder
  int64_t mtime = 0;
};
std::vector<CheckpointListing> list_checkpoints(ObjectStore& store);

// Reads one checkpoint, verifying every shard's size and checksum; the flat state in `out`.
// Throws StoreError (or InputError for a malformed manifest) naming what is wrong.
Manifest read_checkpoint(ObjectStore& store, int64_t step, std::string* out);

class CheckpointManager {
 public:
  // `comm` is duplicated, so commits never interfere with the training loop's collectives.
  // sharding (ZeRO-1): every rank writes its slice of each buffer (all of the parameters' size);
  // sharded buffers hold that slice alone.
  CheckpointManager(const CheckpointConfig& cfg, Communicator& comm,
                    std::vector<StateBuffer> buffers, std::vector<ParamInfo> layout,
                    std::string optimizer, std::string config_text,
                    nlohmann::json model = nlohmann::json::object(),
                    const FlatSharding* sharding = nullptr);
  ~CheckpointManager();
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // Copies this rank's shard to host memory and commits it in the background (async) or before
  // returning (sync). Waits first for a save still in flight. Returns the seconds training was
  // held up (the stall).
  double save(const TrainingPosition& pos, bool sync);
  // Waits for a save in flight.
  void wait();
  // Step of the newest checkpoint this manager committed, or -1.
  int64_t last_committed() const;

  // Loads the newest valid checkpoint into the buffers (falling back past broken ones with a
  // warning), or the one named by cfg.resume. Collective. nullopt when there is none.
  std::optional<TrainingPosition> resume();

 private:
  // One object a rank writes: bytes [offset, offset + size) of the whole state.
  struct Piece {
    std::string key;
    uint64_t offset = 0, size = 0;
  };
  static constexpr size_t kMaxPieces = 4;  // a rank writes one, or one per buffer
  struct Job {
    TrainingPosition pos;
    std::vector<Piece> pieces;  // this rank's, their bytes one after another in snapshot_
  };
  void upload_loop();
  void commit(const Job& job);
  struct ShardReport {  // what each rank tells the others after writing its pieces
    char ok;
    char xxh3[kMaxPieces][17];
  };
  std::vector<Piece> pieces_of(int rank, int world) const;
  // Bytes [offset, offset + size) of the whole state into or out of `bytes`, for the part that
  // this rank's buffers hold.
  void copy_range(uint64_t offset, uint64_t size, char* bytes, bool to_buffers) const;
  // Rank 0: the manifest, if every rank's shard is good. True when committed.
  bool write_manifest(const Job& job, const std::vector<ShardReport>& reports);
  void apply_retention(int64_t newest);

  CheckpointConfig cfg_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<ObjectStore> store_;
  std::vector<StateBuffer> buffers_;
  std::vector<ParamInfo> layout_;
  std::string optimizer_, config_, config_hash_;
  nlohmann::json model_;
  std::optional<FlatSharding> sharding_;
  uint64_t state_bytes_ = 0;
  std::vector<uint64_t> buffer_bytes_;  // each buffer's size in the whole state
  // Host copy of this rank's shard, reused by every save (one save in flight at a time), so a
  // save costs one memcpy into memory that is already mapped.
  std::vector<char> snapshot_;

  // The uploader: at most one job pending, committed on the worker's thread.
  std::optional<Job> pending_;
  bool busy_ = false;
  int64_t last_committed_ = -1;
  BackgroundWorker worker_;
};

}  // namespace tern
