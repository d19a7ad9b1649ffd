// Run under mpirun -np W (W = 2, 3): a W-rank run must give the parameters of a 1-rank run with
// the same global batch (DESIGN.md section 4), and two W-rank runs must be bit-identical; with
// ZeRO-1 (optimizer state sharded) too.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "tern/base/log.h"
#include "tern/dist/sharding.h"
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

TrainerConfig sgd_with_accumulation() {
  TrainerConfig c = base_config();
  c.optim.name = "sgd";
  c.optim.lr = 0.05f;
  c.train.accum_steps = 2;
  return c;
}

TEST(WRankInvariant, SgdWithAccumulation) { expect_matches_one_rank(sgd_with_accumulation()); }

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

// ZeRO-1's collectives, uneven counts and a rank with none: the reduce-scatter gives each rank
// the sums of its part, the all-gather puts every rank's part everywhere.
TEST(ZeroCollectives, ReduceScatterAndAllGatherUnevenCounts) {
  auto comm = make_mpi_communicator(MpiScope::world);
  const int W = comm->size(), me = comm->rank();
  std::vector<int64_t> counts(W), offsets(W);
  int64_t total = 0;
  for (int r = 0; r < W; ++r) {
    counts[r] = r == 1 ? 0 : 5 + 3 * r;  // rank 1 owns nothing
    offsets[r] = total;
    total += counts[r];
  }
  std::vector<float> in(total), out(std::max<int64_t>(counts[me], 1), -1.0f);
  for (int64_t i = 0; i < total; ++i) in[i] = static_cast<float>(i + 100 * me);
  comm->reduce_scatter_sum_start(in.data(), out.data(), counts);
  comm->wait_all();
  for (int64_t i = 0; i < counts[me]; ++i) {
    float want = 0;
    for (int r = 0; r < W; ++r) want += static_cast<float>(offsets[me] + i + 100 * r);
    EXPECT_EQ(out[i], want) << "element " << i;
  }
  std::vector<float> data(total + 7, -1.0f);  // parts at offsets shifted by 7: not from 0
  for (int r = 0; r < W; ++r) offsets[r] += 7;
  for (int64_t i = 0; i < counts[me]; ++i) data[offsets[me] + i] = 1000.0f * me + i;
  comm->allgather_start(data.data(), offsets, counts);
  comm->wait_all();
  for (int r = 0; r < W; ++r)
    for (int64_t i = 0; i < counts[r]; ++i) EXPECT_EQ(data[offsets[r] + i], 1000.0f * r + i);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(data[i], -1.0f) << "outside the parts";
}

TEST(ZeroSharding, AlignedSlicesThatTile) {
  for (int W : {1, 2, 3, 7})
    for (int64_t n : {0, 5, 16, 1000, 1 << 20}) {
      FlatSharding s(n, W);
      EXPECT_EQ(s.begin(0), 0);
      EXPECT_EQ(s.end(W - 1), n);
      for (int r = 0; r < W; ++r) {
        EXPECT_LE(s.begin(r), s.end(r));
        if (r > 0) {
          EXPECT_EQ(s.begin(r), s.end(r - 1));
          if (s.begin(r) < n) {
            EXPECT_EQ(s.begin(r) % FlatSharding::kAlign, 0);
          }
        }
        int64_t chunked = 0;
        for (int c = 0; c < s.num_chunks(64); ++c) {
          auto [first, last] = s.chunk_of(r, c, 64);
          EXPECT_EQ(first, s.begin(r) + chunked);
          chunked += last - first;
        }
        EXPECT_EQ(chunked, s.size(r));
      }
      int64_t sum = 0;
      for (int64_t c : s.counts_within(n / 3, n)) sum += c;
      EXPECT_EQ(sum, n - n / 3);
    }
}

// ZeRO-1 trains as unsharded does: bit for bit on 1 rank, within float tolerance on W (the sums
// go in another order), and two W-rank runs are bit-identical.
void expect_zero_matches(TrainerConfig c) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  c.dist.zero = 0;
  Run plain = train(c, MpiScope::world);
  c.dist.zero = 1;
  Run zero = train(c, MpiScope::world);
  Run again = train(c, MpiScope::world);
  EXPECT_EQ(zero.checksum, again.checksum) << "ZeRO-1, same W: bit for bit";
  const double d = relative_distance(zero.params, plain.params);
  EXPECT_LT(d, 1e-5) << "ZeRO-1 vs unsharded relative distance " << d;
  if (rank == 0) {
    c.dist.zero = 0;
    Run one = train(c, MpiScope::self);
    c.dist.zero = 1;
    Run one_zero = train(c, MpiScope::self);
    EXPECT_EQ(one.checksum, one_zero.checksum) << "1 rank: ZeRO-1 is the unsharded update";
    std::printf("[ zero ] relative distance ZeRO-1 vs unsharded on W ranks: %.3g\n", d);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(ZeroOne, AdamWWithClippingMatchesUnsharded) { expect_zero_matches(base_config()); }

TEST(ZeroOne, SgdWithAccumulationMatchesUnsharded) {
  TrainerConfig c = sgd_with_accumulation();
  c.dist.bucket_mb = 25;  // one bucket: the reduce-scatter spans every slice
  expect_zero_matches(c);
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
