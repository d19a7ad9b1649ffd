// The asynchronous checkpoint save: save() snapshots the state before it returns, so training may
// change the buffers at once while the upload thread commits the snapshot; another thread may ask
// for the last committed step meanwhile. launch/test.sh also runs this under ThreadSanitizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "temp_dir.h"
#include "tern/dist/communicator.h"
#include "tern/train/checkpoint.h"

namespace tern {
namespace {

class CheckpointAsync : public ::testing::Test {
 protected:
  tern::testing::TempDir dir_{"tern-ckpt-test"};
  const std::string root_ = dir_.path();
};

void fill(Tensor& t, float v) { std::fill_n(t.data<float>(), t.numel(), v); }

TEST_F(CheckpointAsync, TrainingChangesTheStateWhileTheSnapshotUploads) {
  constexpr int64_t kElems = 1 << 18;  // 1 MB per buffer
  constexpr int kSaves = 12;
  auto comm = make_single_communicator();
  std::vector<StateBuffer> state = {{"params", Tensor::empty({kElems})},
                                    {"optim.m", Tensor::empty({kElems})}};
  const std::vector<ParamInfo> layout = {{"0.linear.weight", {kElems}, 0, true, Init::zeros, 1, 0}};
  CheckpointConfig cfg;
  cfg.uri = root_;
  cfg.keep = 2;
  {
    CheckpointManager mgr(cfg, *comm, state, layout, "adamw", "config");
    std::atomic<bool> done{false};
    std::atomic<int64_t> observed{-1};
    std::thread observer([&] {  // e.g. a metrics thread reading the checkpoint age
      while (!done) observed = std::max(observed.load(), mgr.last_committed());
    });
    for (int step = 1; step <= kSaves; ++step) {
      fill(state[0].tensor, static_cast<float>(step));
      fill(state[1].tensor, static_cast<float>(-step));
      mgr.save({step, step * 10, 0.5}, false);
      // Training goes on at once: these values must not reach the checkpoint of this step.
      fill(state[0].tensor, 1e9f);
      fill(state[1].tensor, 1e9f);
    }
    mgr.wait();
    done = true;
    observer.join();
    EXPECT_EQ(mgr.last_committed(), kSaves);
    EXPECT_GE(observed.load(), 1);
  }
  fill(state[0].tensor, 0);
  fill(state[1].tensor, 0);
  CheckpointManager reader(cfg, *comm, state, layout, "adamw", "config");
  const auto pos = reader.resume();
  ASSERT_TRUE(pos.has_value());
  EXPECT_EQ(pos->step, kSaves);
  EXPECT_EQ(pos->samples_seen, kSaves * 10);
  const float* p = state[0].tensor.data<float>();
  const float* m = state[1].tensor.data<float>();
  EXPECT_TRUE(std::all_of(p, p + kElems, [](float v) { return v == kSaves; }));
  EXPECT_TRUE(std::all_of(m, m + kElems, [](float v) { return v == -kSaves; }));
}

}  // namespace
}  // namespace tern
