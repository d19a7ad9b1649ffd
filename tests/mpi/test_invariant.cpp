// Run under mpirun -np W (W = 2, 3): a W-rank run must give the parameters of a 1-rank run with
// the same global batch (DESIGN.md section 4), and two W-rank runs must be bit-identical.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "tern/base/log.h"
#include "tern/io/hdf5_file.h"
#include "tern/train/trainer.h"

namespace tern {
namespace {

std::string g_data_path;

// A small learnable classification set; the row count is prime so batches straddle epochs.
void write_dataset(const std::string& path) {
  const int64_t rows = 211, val_rows = 37, features = 12, classes = 4;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> n(0, 1);
  h5::File f = h5::File::create(path);
  for (auto [name, count] : {std::pair{"train", rows}, {"val", val_rows}}) {
    Tensor x = Tensor::empty({count, features}), y = Tensor::empty({count}, DType::i32);
    for (int64_t r = 0; r < count; ++r) {
      int32_t label = static_cast<int32_t>(rng() % classes);
      y.data<int32_t>()[r] = label;
      for (int64_t c = 0; c < features; ++c)
        x.data<float>()[r * features + c] = n(rng) + (c % classes == label ? 2.0f : 0.0f);
    }
    f.write(std::string("/") + name + "/x", x);
    f.write(std::string("/") + name + "/y", y);
  }
}

TrainerConfig base_config() {
  TrainerConfig c;
  // TERN_TEST_DEVICE=cuda runs every rank on the GPU (launch/gpu-check.sh: 2 ranks on one GPU,
  // where NCCL refuses, so the gradients go over MPI through host memory).
  const char* device = std::getenv("TERN_TEST_DEVICE");
  c.run.device = device ? device : "cpu";
  if (c.run.device == "cuda") c.dist.backend = "mpi";
  c.model.layers = {"linear out=24", "layernorm", "gelu",          "dropout p=0.2",
                    "linear out=16", "relu",      "dropout p=0.1", "linear out=4"};
  c.data.path = g_data_path;
  c.train.steps = 25;
  c.train.batch_size = 23;  // not divisible by 2 or 3: uneven shares
  c.train.eval_every = 0;
  c.train.seed = 77;
  c.optim.lr = 0.01f;
  c.optim.warmup_steps = 3;
  c.optim.clip_norm = 1.0f;
  c.run.progress = "off";
  c.dist.bucket_mb = 0.001;  // many small buckets: exercises the overlap path
  return c;
}

struct Run {
  std::vector<float> params;
  std::string checksum;
};

Run train(const TrainerConfig& c, MpiScope scope) {
  auto comm = make_mpi_communicator(scope);
  Trainer t(c, *comm);
  TrainResult r = t.run();
  const Tensor p = t.model().params().to(Device{});
  return {std::vector<float>(p.data<float>(), p.data<float>() + p.numel()), r.param_checksum};
}

double relative_distance(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += double(a[i] - b[i]) * (a[i] - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / norm);
}

void expect_matches_one_rank(const TrainerConfig& c) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  Run world = train(c, MpiScope::world);
  Run again = train(c, MpiScope::world);
  EXPECT_EQ(world.checksum, again.checksum) << "same W, same parameters, bit for bit";
  if (rank == 0) {
    Run single = train(c, MpiScope::self);
    const double d = relative_distance(world.params, single.params);
    EXPECT_LT(d, 1e-5) << "W-rank vs 1-rank relative distance " << d;
    // Without a reduction-order difference there is nothing to tolerate; with it, some.
    std::printf("[ invariant ] relative distance W-rank vs 1-rank: %.3g\n", d);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(WRankInvariant, AdamWWithDropout) { expect_matches_one_rank(base_config()); }

TEST(WRankInvariant, SgdWithAccumulation) {
  TrainerConfig c = base_config();
  c.optim.name = "sgd";
  c.optim.lr = 0.05f;
  c.train.accum_steps = 2;
  expect_matches_one_rank(c);
}

// Batch norm's statistics are reduced over the ranks: W ranks still train as one.
TEST(WRankInvariant, SynchronisedBatchNorm) {
  TrainerConfig c = base_config();
  // No bias before a batch norm: its gradient is zero up to rounding, which AdamW would turn into
  // full-size steps in different directions on W ranks and on 1.
  c.model.layers = {
      "linear out=24 bias=false", "batchnorm", "relu",        "linear out=16 bias=false",
      "batchnorm momentum=0.3",   "gelu",      "linear out=4"};
  expect_matches_one_rank(c);
}

TEST(WRankInvariant, BatchSmallerThanWorld) {
  TrainerConfig c = base_config();
  c.train.batch_size = 2;  // with 3 ranks one rank has no rows
  c.train.steps = 10;
  expect_matches_one_rank(c);
}

}  // namespace
}  // namespace tern

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  tern::init_logging(rank, "warn");
  // Rank 0 makes the data set; the others wait for it.
  char path[256] = {};
  if (rank == 0) {
    auto dir = std::filesystem::temp_directory_path() / ("tern-mpi-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    std::snprintf(path, sizeof path, "%s", (dir / "data.h5").c_str());
    tern::write_dataset(path);
  }
  MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
  tern::g_data_path = path;
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) std::filesystem::remove_all(std::filesystem::path(path).parent_path());
  MPI_Finalize();
  return worst;
}
