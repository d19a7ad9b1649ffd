#pragma once
// The watchdog of an MPI job: a thread per rank that exchanges heartbeats with every peer over a
// communicator of its own, and watches the collectives of the training loop's communicator.
//   - A peer that sends no heartbeat for timeout_seconds is dead, stopped (SIGSTOP, a frozen
//     VM) or cut off: the rank logs which one (rank, host, pid, its last step and collective)
//     and ends the job with kExitPeerLost.
//   - A peer that still beats but has made no progress in its own collectives for
//     timeout_seconds while this rank waits for it is hung: the same.
//   - A peer that is only slower (this rank waits straggler_seconds for it, and it progresses)
//     is reported, once per collective, and never killed.
// Ending the job is MPI_Abort (mpirun then stops every rank), with a fallback _exit should the
// abort itself hang on a link that is down. Why a thread and not deadlines inside each wait:
// the thread sees a dead peer while this rank computes, too, and blocking calls (MPI_Allreduce,
// the checkpoint thread's collectives) need no rewriting to be covered.
#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tern/dist/communicator.h"

namespace tern {

class MpiWatchdog {
 public:
  // Collective over `world`; duplicates it for the heartbeats.
  MpiWatchdog(MPI_Comm world, const WatchdogOptions& options);
  ~MpiWatchdog();
  MpiWatchdog(const MpiWatchdog&) = delete;
  MpiWatchdog& operator=(const MpiWatchdog&) = delete;

  // The training loop's position, for the heartbeats and the reports.
  void set_step(int64_t step) { step_.store(step, std::memory_order_relaxed); }
  // Around each collective of the watched communicator: `what` must be a string literal; bucket
  // is the gradient bucket (-1 for other collectives). Returns the collective's sequence number.
  int64_t begin(const char* what, int bucket);
  void set_bucket(int bucket) { bucket_.store(bucket, std::memory_order_relaxed); }
  void end();
  // A non-blocking collective was started (it counts in the sequence, and is progress).
  void started();
  // This rank progresses outside the watched collectives (the checkpoint thread's).
  void touch();

 private:
  struct Beat {  // what a heartbeat carries; all int64 so that it travels as MPI_INT64_T
    int64_t step, seq, bucket, progress_age_ms, leaving;
  };
  static constexpr int kBeatWords = sizeof(Beat) / sizeof(int64_t);
  struct Peer {
    int pid = 0;
    std::string host;
    Beat last{};
    double heard = 0;   // monotonic seconds of the last heartbeat
    bool gone = false;  // said goodbye: no longer watched
    MPI_Request recv = MPI_REQUEST_NULL, send = MPI_REQUEST_NULL;
    Beat in{}, out{};
  };
  void run();
  void exchange(double now);
  void inspect(double now);
  std::string who(int r) const;
  [[noreturn]] void end_job(const std::string& why);
  double now() const;

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  double timeout_, straggler_, interval_;
  std::vector<Peer> peers_;
  // Written by the training loop, read by the thread.
  std::atomic<int64_t> step_{0}, seq_{0}, wait_seq_{-1};
  std::atomic<int> bucket_{-1};
  std::atomic<const char*> what_{nullptr};
  std::atomic<double> wait_since_{0}, progress_{0};
  int64_t reported_seq_ = -1;  // the collective whose straggler was reported
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tern
