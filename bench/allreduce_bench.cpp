// All-reduce bandwidth over the job's ranks, reported as nccl-tests does: for each message size,
// the time of one float32 sum all-reduce (the trainer's path: allreduce_sum_start + wait_all),
// algorithm bandwidth (bytes / time) and bus bandwidth (algbw * 2(n-1)/n: what each rank's link
// carries in a bandwidth-optimal all-reduce, comparable with the link rate). First the link's
// own point-to-point rate between rank 0 and rank 1 (a 64 MB exchange), as the practical limit.
//   mpirun -np N tern_bench_allreduce [--min-bytes 1024] [--max-bytes 268435456] [--seconds 0.5]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tern/dist/communicator.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One exchange of `bytes` each way between ranks 0 and 1: the time of the slower direction.
double exchange_seconds(size_t bytes, int rank) {
  std::vector<char> out(bytes, 1), in(bytes);
  const int peer = rank == 0 ? 1 : 0;
  MPI_Barrier(MPI_COMM_WORLD);
  const double t = now();
  if (rank < 2)
    MPI_Sendrecv(out.data(), static_cast<int>(bytes), MPI_BYTE, peer, 1, in.data(),
                 static_cast<int>(bytes), MPI_BYTE, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  double dt = now() - t;
  MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return dt;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tern;
  ProcessGroup group(&argc, &argv);
  size_t min_bytes = 1024, max_bytes = size_t{256} << 20;
  double seconds = 0.5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--min-bytes") min_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--max-bytes") max_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--seconds") seconds = std::atof(argv[i + 1]);
  }
  if (group.world() < 2) {
    std::fprintf(stderr, "tern_bench_allreduce: run it under mpirun with 2 or more ranks\n");
    return 2;
  }
  auto comm = make_mpi_communicator(MpiScope::world);
  const int n = comm->size();
  const bool root = comm->rank() == 0;
  const double bus_factor = 2.0 * (n - 1) / n;

  exchange_seconds(1 << 20, comm->rank());  // connections up
  const size_t p2p_bytes = size_t{64} << 20;
  const double p2p = exchange_seconds(p2p_bytes, comm->rank());
  if (root) {
    std::printf("# ranks %d; point-to-point exchange rank 0 <-> 1, 64 MB each way: %.3f GB/s\n", n,
                static_cast<double>(p2p_bytes) / p2p / 1e9);
    std::printf("%12s %12s %8s %12s %10s %10s\n", "size_B", "count", "iters", "time_us",
                "algbw_GB/s", "busbw_GB/s");
  }
  for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const int64_t count = static_cast<int64_t>(bytes / sizeof(float));
    std::vector<float> buf(static_cast<size_t>(count), 1.0f);
    auto once = [&] {
      comm->allreduce_sum_start(buf.data(), count);
      comm->wait_all();
    };
    once();  // warm-up
    // As many iterations as fit in `seconds` (rank 0's estimate, shared), at least 3.
    comm->barrier();
    double t = now();
    once();
    double one = now() - t;
    comm->broadcast(&one, sizeof one, 0);
    const int iters = std::clamp(static_cast<int>(seconds / std::max(one, 1e-7)), 3, 1000);
    comm->barrier();
    t = now();
    for (int i = 0; i < iters; ++i) once();
    double dt = (now() - t) / iters;
    comm->allreduce_sum(&dt, 1);
    dt /= n;
    if (root)
      std::printf("%12zu %12lld %8d %12.1f %10.4f %10.4f\n", bytes, static_cast<long long>(count),
                  iters, dt * 1e6, static_cast<double>(bytes) / dt / 1e9,
                  static_cast<double>(bytes) / dt / 1e9 * bus_factor);
    std::fflush(stdout);
  }
  return 0;
}
