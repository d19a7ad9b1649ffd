#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tern/compute/tensor.h"

namespace tern {

// Where this process stands in the job. Started by mpirun or srun, it initialises MPI; started
// alone, it is world size 1 and MPI is never touched (so a single-process run needs no launcher).
class ProcessGroup {
 public:
  ProcessGroup(int* argc, char*** argv);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }
  int local_world() const { return local_world_; }
  bool uses_mpi() const { return mpi_; }
  // Ends every rank of the job (MPI_Abort) or just this process.
  [[noreturn]] void abort(int code) const;

 private:
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_world_ = 1;
  bool mpi_ = false;
};

// True when the environment says a launcher (mpirun, srun) started this process.
bool launched_by_mpi();

// Collectives over the ranks of a group. Non-blocking all-reduces are started, driven by
// progress() (MPI progresses only inside MPI calls) and completed together by wait_all().
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // True when allreduce_sum_start takes device pointers (NCCL), false for host memory (MPI).
  virtual bool device_buffers() const { return false; }
  virtual void allreduce_sum_start(float* data, int64_t count) = 0;
  // ZeRO-1's two halves of an all-reduce, started like allreduce_sum_start and completed by
  // wait_all(), in the communicator's memory (device_buffers()):
  //   reduce-scatter: `in` holds sum(counts) elements, counts[r] for rank r in rank order; this
  //                   rank's `out` receives its counts[rank] of them summed over the ranks (`out`
  //                   must not overlap `in`);
  //   all-gather:     in place: rank r's counts[r] elements at data + offsets[r] reach every rank.
  virtual void reduce_scatter_sum_start(const float* in, float* out,
                                        const std::vector<int64_t>& counts) = 0;
  virtual void allgather_start(float* data, const std::vector<int64_t>& offsets,
                               const std::vector<int64_t>& counts) = 0;
  virtual void progress() = 0;
  virtual void wait_all() = 0;
  virtual void allreduce_sum(double* data, int count) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // out receives every rank's `bytes` bytes of `in`, in rank order.
  virtual void allgather(const void* in, size_t bytes, void* out) = 0;
  // Root's out receives every rank's `bytes` bytes of `in` in rank order, where `bytes` may differ
  // between ranks (root's out must hold their sum; out is unused elsewhere). Any size: large
  // buffers travel in pieces.
  virtual void gatherv(const void* in, size_t bytes, void* out, int root) = 0;
  virtual void barrier() = 0;
  // The training step this rank is on, for the watchdog's reports (MPI world communicator).
  virtual void set_step(int64_t) {}
  // A communicator over the same ranks whose collectives never match this one's: for a
  // background thread (checkpoint commits) running beside the training loop's collectives.
  // Collective: every rank calls it.
  virtual std::unique_ptr<Communicator> duplicate() = 0;
};

// The MPI job's watchdog (src/dist/mpi_watchdog.h): a peer silent or without progress for
// timeout_seconds ends the job (exit kExitPeerLost); one this rank waits for longer than
// straggler_seconds (0: timeout_seconds / 4) is reported.
struct WatchdogOptions {
  double timeout_seconds = 600;
  double straggler_seconds = 0;
};

// World size 1: every collective is the identity.
std::unique_ptr<Communicator> make_single_communicator();
// MPI over the job's ranks (world, watched) or over this process alone (self, for tests comparing
// a W-rank run with a 1-rank run in one job).
enum class MpiScope { world, self };
std::unique_ptr<Communicator> make_mpi_communicator(MpiScope scope,
                                                    const WatchdogOptions& watchdog = {});

// NCCL over this process's GPU, for gradient buffers in device memory (CUDA builds only; throws
// otherwise). The unique id travels over `host`; a collective that does not finish within
// timeout_seconds aborts the communicator and throws instead of hanging on a dead peer.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host, double timeout_seconds);
bool nccl_built();

}  // namespace tern
