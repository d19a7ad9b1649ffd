#include "tern/dist/communicator.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#ifdef TERN_HAVE_MPI
#include <mpi.h>
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
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum_start(float* data, int64_t count) override {
    if (count > INT32_MAX) throw std::length_error("MPI all-reduce bucket over 2^31 elements");
    requests_.push_back(MPI_REQUEST_NULL);
    check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm_,
                         &requests_.back()),
          "MPI_Iallreduce");
  }
  void progress() override {
    if (requests_.empty()) return;
    int done = 0;
    check(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done,
                      MPI_STATUSES_IGNORE),
          "MPI_Testall");
  }
  void wait_all() override {
    check(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE),
          "MPI_Waitall");
    requests_.clear();
  }
  void allreduce_sum(double* data, int count) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_DOUBLE, MPI_SUM, comm_), "MPI_Allreduce");
  }
  void broadcast(void* data, size_t bytes, int root) override {
    // MPI counts are ints: send large buffers in pieces.
    constexpr size_t kPiece = size_t{1} << 30;
    for (size_t off = 0; off < bytes; off += kPiece)
      check(MPI_Bcast(static_cast<char*>(data) + off,
                      static_cast<int>(std::min(kPiece, bytes - off)), MPI_BYTE, root, comm_),
            "MPI_Bcast");
  }
  void allgather(const void* in, size_t bytes, void* out) override {
    check(MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes),
                        MPI_BYTE, comm_),
          "MPI_Allgather");
  }
  void gatherv(const void* in, size_t bytes, void* out, int root) override {
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
  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }
  std::unique_ptr<Communicator> duplicate() override {
    MPI_Comm dup;
    check(MPI_Comm_dup(comm_, &dup), "MPI_Comm_dup");
    auto out = std::make_unique<MpiCommunicator>(dup);
    out->owned_ = true;
    return out;
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }

 private:
  bool owned_ = false;
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> requests_;
};

}  // namespace

ProcessGroup::ProcessGroup(int* argc, char*** argv) {
  if (!launched_by_mpi()) return;
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

std::unique_ptr<Communicator> make_mpi_communicator(MpiScope scope) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized)
    throw std::runtime_error("MPI communicator requested, but MPI is not initialised");
  return std::make_unique<MpiCommunicator>(scope == MpiScope::world ? MPI_COMM_WORLD
                                                                    : MPI_COMM_SELF);
}

#else

ProcessGroup::ProcessGroup(int*, char***) {
  if (launched_by_mpi())
    throw std::runtime_error(
        "started by an MPI launcher, but this tern was built without MPI (TERN_MPI=OFF)");
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::abort(int code) const { std::exit(code); }

std::unique_ptr<Communicator> make_mpi_communicator(MpiScope) {
  throw std::runtime_error("this tern was built without MPI (TERN_MPI=OFF)");
}

#endif

namespace {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum_start(float*, int64_t) override {}
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
