#include "tern/dist/communicator.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#ifdef TERN_HAVE_MPI
#include <mpi.h>

#include "mpi_watchdog.h"
#endif

namespace tern {

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  // srun with an MPI plugin sets PMI/PMIx variables; a bare SLURM_PROCID with one task is not MPI.
  const char* ntasks = std::getenv("SLURM_NTASKS");
  return std::getenv("SLURM_PROCID") && ntasks && std::atoi(ntasks) > 1;
}

#ifdef TERN_HAVE_MPI
namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string(what) + ": " + std::string(msg, len));
}

class MpiCommunicator final : public Communicator {
 public:
  // watchdog: the job's (null for MPI_COMM_SELF). watched: this is the communicator the training
  // loop waits in, whose collectives the watchdog follows; the others' (the checkpoint thread's)
  // only count as this rank's progress.
  MpiCommunicator(MPI_Comm comm, std::shared_ptr<MpiWatchdog> watchdog, bool watched)
      : comm_(comm), watchdog_(std::move(watchdog)), watched_(watched) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void set_step(int64_t step) override {
    if (watched_) watchdog_->set_step(step);
  }

  // The gradient all-reduces are non-blocking, and MPI advances them only inside MPI calls: a
  // progress thread tests them every 50 us while any is in flight, so that they move while
  // backward computes (the overlap), without spinning a core. Requests are touched under mu_.
  void allreduce_sum_start(float* data, int64_t count) override {
    if (count > INT32_MAX) throw std::length_error("MPI all-reduce bucket over 2^31 elements");
    start([&](MPI_Request* req) {
      check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm_,
                           req),
            "MPI_Iallreduce");
    });
  }
  // MPI's int counts; the arrays live until wait_all(), as a non-blocking collective needs.
  void reduce_scatter_sum_start(const float* in, float* out,
                                const std::vector<int64_t>& counts) override {
    const std::vector<int>& c = keep_counts(counts);
    start([&](MPI_Request* req) {
      check(MPI_Ireduce_scatter(in, out, c.data(), MPI_FLOAT, MPI_SUM, comm_, req),
            "MPI_Ireduce_scatter");
    });
  }
  void allgather_start(float* data, const std::vector<int64_t>& offsets,
                       const std::vector<int64_t>& counts) override {
    const std::vector<int>& c = keep_counts(counts);
    const std::vector<int>& d = keep_counts(offsets);
    start([&](MPI_Request* req) {
      check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, c.data(), d.data(), MPI_FLOAT,
                            comm_, req),
            "MPI_Iallgatherv");
    });
  }
  void progress() override {
    std::lock_guard<std::mutex> lock(mu_);
    check(test_in_flight(), "MPI_Testall");
  }
  void wait_all() override {
    // Bucket by bucket, so that the watchdog can say which one a lost peer left unfinished.
    std::lock_guard<std::mutex> lock(mu_);
    const int n = static_cast<int>(requests_.size());
    Watch watch(*this, "the gradient all-reduce", 0);
    std::vector<int> done(n);
    int first = 0;
    while (first < n) {
      int count = 0;
      check(MPI_Waitsome(n, requests_.data(), &count, done.data(), MPI_STATUSES_IGNORE),
            "MPI_Waitsome");
      if (count == MPI_UNDEFINED) break;
      while (first < n && requests_[first] == MPI_REQUEST_NULL) ++first;
      if (watched_) watchdog_->set_bucket(first);
    }
    requests_.clear();
    counts_.clear();
    in_flight_ = false;
  }
  void allreduce_sum(double* data, int count) override {
    Watch watch(*this, "an all-reduce of float64 sums");
    check(MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_DOUBLE, MPI_SUM, comm_), "MPI_Allreduce");
  }
  void broadcast(void* data, size_t bytes, int root) override {
    Watch watch(*this, "a broadcast");
    // MPI counts are ints: send large buffers in pieces.
    constexpr size_t kPiece = size_t{1} << 30;
    for (size_t off = 0; off < bytes; off += kPiece)
      check(MPI_Bcast(static_cast<char*>(data) + off,
                      static_cast<int>(std::min(kPiece, bytes - off)), MPI_BYTE, root, comm_),
            "MPI_Bcast");
  }
  void allgather(const void* in, size_t bytes, void* out) override {
    Watch watch(*this, "an all-gather");
    check(MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes),
                        MPI_BYTE, comm_),
          "MPI_Allgather");
  }
  void gatherv(const void* in, size_t bytes, void* out, int root) override {
    Watch watch(*this, "a gather");
    // Point to point from each rank in turn (MPI_Gatherv's int counts and displacements would
    // cap the total at 2 GiB). The tag keeps these messages apart; nothing else here uses p2p.
    constexpr size_t kPiece = size_t{1} << 30;
    constexpr int kTag = 0x7e21;
    uint64_t mine = bytes;
    std::vector<uint64_t> counts(rank_ == root ? size_ : 0);
    check(MPI_Gather(&mine, 1, MPI_UINT64_T, counts.data(), 1, MPI_UINT64_T, root, comm_),
          "MPI_Gather");
    if (rank_ != root) {
      for (size_t off = 0; off < bytes; off += kPiece)
        check(
            MPI_Send(static_cast<const char*>(in) + off,
                     static_cast<int>(std::min(kPiece, bytes - off)), MPI_BYTE, root, kTag, comm_),
            "MPI_Send");
      return;
    }
    char* dst = static_cast<char*>(out);
    for (int r = 0; r < size_; ++r) {
      if (r == root) {
        if (bytes) std::memcpy(dst, in, bytes);
      } else {
        for (size_t off = 0; off < counts[r]; off += kPiece)
          check(MPI_Recv(dst + off, static_cast<int>(std::min<size_t>(kPiece, counts[r] - off)),
                         MPI_BYTE, r, kTag, comm_, MPI_STATUS_IGNORE),
                "MPI_Recv");
      }
      dst += counts[r];
    }
  }
  void barrier() override {
    Watch watch(*this, "a barrier");
    check(MPI_Barrier(comm_), "MPI_Barrier");
  }
  std::unique_ptr<Communicator> duplicate() override {
    MPI_Comm dup;
    check(MPI_Comm_dup(comm_, &dup), "MPI_Comm_dup");
    // Not watched: its collectives (checkpoint commits, on a background thread) may wait on
    // uploads; they count as progress, and a lost peer is still seen by the heartbeats.
    auto out = std::make_unique<MpiCommunicator>(dup, watchdog_, false);
    out->owned_ = true;
    return out;
  }
  ~MpiCommunicator() override {
    if (progress_thread_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      cv_.notify_one();
      progress_thread_.join();
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }

 private:
  // Posts one non-blocking collective (`post` fills its request) for the progress thread.
  template <class Post>
  void start(Post post) {
    if (watched_) watchdog_->started();
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(MPI_REQUEST_NULL);
      post(&requests_.back());
      in_flight_ = true;
      if (watched_ && !progress_thread_.joinable())
        progress_thread_ = std::thread([this] { progress_loop(); });
    }
    cv_.notify_one();
  }
  // Counts or offsets as MPI's ints, kept until wait_all().
  const std::vector<int>& keep_counts(const std::vector<int64_t>& values) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int>& out = counts_.emplace_back();
    for (int64_t v : values) {
      if (v > INT32_MAX)
        throw std::length_error("MPI reduce-scatter or all-gather over 2^31 elements");
      out.push_back(static_cast<int>(v));
    }
    return out;
  }
  // mu_ held. Returns MPI's status rather than throwing: the progress thread cannot throw.
  int test_in_flight() {
    if (!in_flight_) return MPI_SUCCESS;
    int done = 0;
    const int rc = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done,
                               MPI_STATUSES_IGNORE);
    if (done) in_flight_ = false;
    return rc;
  }
  void progress_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || in_flight_; });
      if (stop_) return;
      // An MPI error is fatal to the job by default; the training loop's own calls report others.
      test_in_flight();
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      lock.lock();
    }
  }
  // Tells the watchdog this rank waits in a collective, for as long as it lives (or, on a
  // communicator it does not follow, that this rank progresses).
  class Watch {
   public:
    Watch(const MpiCommunicator& c, const char* what, int bucket = -1)
        : w_(c.watchdog_.get()), watched_(c.watched_) {
      if (watched_)
        w_->begin(what, bucket);
      else if (w_)
        w_->touch();
    }
    ~Watch() {
      if (watched_)
        w_->end();
      else if (w_)
        w_->touch();
    }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

   private:
    MpiWatchdog* w_;
    bool watched_;
  };
  bool owned_ = false;
  MPI_Comm comm_;
  std::shared_ptr<MpiWatchdog> watchdog_;
  bool watched_ = false;
  int rank_ = 0, size_ = 1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<MPI_Request> requests_;      // under mu_
  std::deque<std::vector<int>> counts_;    // under mu_: the arrays of the requests in flight
  bool in_flight_ = false, stop_ = false;  // under mu_
  std::thread progress_thread_;
};

}  // namespace

ProcessGroup::ProcessGroup(int* argc, char*** argv) {
  if (!launched_by_mpi()) return;
  // A peer that is gone leaves its sockets (and, with its host's daemon gone, this rank's stdout)
  // closed: a write there must be an error that the watchdog reports, not a SIGPIPE that ends
  // this rank first and makes mpirun name it as the one lost.
  ::signal(SIGPIPE, SIG_IGN);
  // Checkpoint commits run their collectives on a background thread, on their own communicator.
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  mpi_ = true;
  if (provided < MPI_THREAD_MULTIPLE)
    throw std::runtime_error("this MPI library does not support MPI_THREAD_MULTIPLE");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_world_);
  MPI_Comm_free(&node);
}

ProcessGroup::~ProcessGroup() {
  if (mpi_) MPI_Finalize();
}

void ProcessGroup::abort(int code) const {
  if (mpi_ && world_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

std::unique_ptr<Communicator> make_mpi_communicator(MpiScope scope,
                                                    const WatchdogOptions& watchdog) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized)
    throw std::runtime_error("MPI communicator requested, but MPI is not initialised");
  if (scope == MpiScope::self)
    return std::make_unique<MpiCommunicator>(MPI_COMM_SELF, nullptr, false);
  return std::make_unique<MpiCommunicator>(
      MPI_COMM_WORLD, std::make_shared<MpiWatchdog>(MPI_COMM_WORLD, watchdog), true);
}

#else

ProcessGroup::ProcessGroup(int*, char***) {
  if (launched_by_mpi())
    throw std::runtime_error(
        "started by an MPI launcher, but this tern was built without MPI (TERN_MPI=OFF)");
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::abort(int code) const { std::exit(code); }

std::unique_ptr<Communicator> make_mpi_communicator(MpiScope, const WatchdogOptions&) {
  throw std::runtime_error("this tern was built without MPI (TERN_MPI=OFF)");
}

#endif

namespace {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum_start(float*, int64_t) override {}
  // Host memory only: a GPU run at world size 1 without NCCL never starts a collective.
  void reduce_scatter_sum_start(const float* in, float* out,
                                const std::vector<int64_t>& counts) override {
    if (in != out && counts[0]) std::memcpy(out, in, counts[0] * sizeof(float));
  }
  void allgather_start(float*, const std::vector<int64_t>&, const std::vector<int64_t>&) override {}
  void progress() override {}
  void wait_all() override {}
  void allreduce_sum(double*, int) override {}
  void broadcast(void*, size_t, int) override {}
  void allgather(const void* in, size_t bytes, void* out) override { std::memcpy(out, in, bytes); }
  void gatherv(const void* in, size_t bytes, void* out, int) override {
    if (bytes) std::memcpy(out, in, bytes);
  }
  void barrier() override {}
  std::unique_ptr<Communicator> duplicate() override {
    return std::make_unique<SingleCommunicator>();
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() {
  return std::make_unique<SingleCommunicator>();
}

}  // namespace tern
