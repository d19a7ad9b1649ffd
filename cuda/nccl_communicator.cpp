// The NCCL communicator: gradient all-reduces on the GPU, on a communication stream of its own.
// A bucket's all-reduce waits (by an event, not the host) for the backward kernels queued before
// it, so it overlaps the backward kernels queued after it. The communicator is non-blocking:
// every wait polls NCCL's asynchronous error and a deadline, and aborts the communicator rather
// than hang when a peer has died.
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "runtime.h"
#include "tern/dist/communicator.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& host, double timeout_seconds)
      : rank_(host.rank()), size_(host.size()), timeout_(timeout_seconds) {
    ncclUniqueId id;
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host.broadcast(&id, sizeof id, 0);
    init([&](ncclConfig_t* config) {
      return ncclCommInitRankConfig(&comm_, size_, id, rank_, config);
    });
  }
  ~NcclCommunicator() override {
    if (comm_) {
      // Finish what is in flight (bounded), then destroy; abort if that fails.
      ncclResult_t st = ncclCommFinalize(comm_);
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      while (st == ncclInProgress && Clock::now() < deadline)
        if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess) break;
      if (st == ncclSuccess)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    }
    if (stream_) cudaStreamDestroy(stream_);
    for (cudaEvent_t e : {ready_, done_})
      if (e) cudaEventDestroy(e);
    if (staging_) cuda::device_free(staging_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool device_buffers() const override { return true; }

  void allreduce_sum_start(float* data, int64_t count) override {
    after_compute();
    enqueue(
        ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat, ncclSum, comm_, stream_),
        "ncclAllReduce");
    pending_ = true;
  }
  // NCCL's own reduce-scatter and all-gather take equal counts: these are groups of one reduce
  // (or broadcast) per rank, rooted at the rank that owns the slice.
  void reduce_scatter_sum_start(const float* in, float* out,
                                const std::vector<int64_t>& counts) override {
    after_compute();
    enqueue(ncclGroupStart(), "ncclGroupStart");
    int64_t offset = 0;
    for (int r = 0; r < size_; ++r) {
      if (counts[r])
        enqueue(ncclReduce(in + offset, r == rank_ ? out : const_cast<float*>(in + offset),
                           static_cast<size_t>(counts[r]), ncclFloat, ncclSum, r, comm_, stream_),
                "ncclReduce");
      offset += counts[r];
    }
    enqueue(ncclGroupEnd(), "ncclGroupEnd");
    pending_ = true;
  }
  void allgather_start(float* data, const std::vector<int64_t>& offsets,
                       const std::vector<int64_t>& counts) override {
    after_compute();
    enqueue(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < size_; ++r) {
      if (counts[r])
        enqueue(ncclBroadcast(data + offsets[r], data + offsets[r], static_cast<size_t>(counts[r]),
                              ncclFloat, r, comm_, stream_),
                "ncclBroadcast");
    }
    enqueue(ncclGroupEnd(), "ncclGroupEnd");
    pending_ = true;
  }
  void progress() override {}
  void wait_all() override {
    if (!pending_) return;
    pending_ = false;
    TERN_CUDA_CHECK(cudaEventRecord(done_, stream_));
    // The host waits here, with a deadline, so that a dead peer ends the job instead of hanging
    // it; the compute stream then continues after the all-reduces.
    wait_event(done_, "all-reduce");
    TERN_CUDA_CHECK(cudaStreamWaitEvent(cuda::compute_stream(), done_));
  }

  // Host buffers: staged through device memory.
  void allreduce_sum(double* data, int count) override {
    void* d = stage(sizeof(double) * count, data);
    enqueue(ncclAllReduce(d, d, count, ncclDouble, ncclSum, comm_, stream_), "ncclAllReduce");
    unstage(data, d, sizeof(double) * count);
  }
  void broadcast(void* data, size_t bytes, int root) override {
    void* d = stage(bytes, data);
    enqueue(ncclBroadcast(d, d, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    unstage(data, d, bytes);
  }
  void allgather(const void* in, size_t bytes, void* out) override {
    auto* d = static_cast<char*>(stage(bytes * (size_ + 1), nullptr));
    TERN_CUDA_CHECK(cudaMemcpyAsync(d, in, bytes, cudaMemcpyHostToDevice, stream_));
    enqueue(ncclAllGather(d, d + bytes, bytes, ncclUint8, comm_, stream_), "ncclAllGather");
    unstage(out, d + bytes, bytes * size_);
  }
  void gatherv(const void* in, size_t bytes, void* out, int root) override {
    std::vector<uint64_t> sizes(size_);
    const uint64_t mine = bytes;
    allgather(&mine, sizeof mine, sizes.data());
    uint64_t total = 0;
    for (uint64_t s : sizes) total += s;
    auto* d = static_cast<char*>(stage(rank_ == root ? total + bytes : bytes, nullptr));
    TERN_CUDA_CHECK(cudaMemcpyAsync(d, in, bytes, cudaMemcpyHostToDevice, stream_));
    char* recv = d + bytes;
    enqueue(ncclGroupStart(), "ncclGroupStart");
    if (rank_ == root) {
      uint64_t off = 0;
      for (int r = 0; r < size_; ++r) {
        if (r == root)
          TERN_CUDA_CHECK(cudaMemcpyAsync(recv + off, d, bytes, cudaMemcpyDeviceToDevice, stream_));
        else if (sizes[r])
          enqueue(ncclRecv(recv + off, sizes[r], ncclUint8, r, comm_, stream_), "ncclRecv");
        off += sizes[r];
      }
    } else if (bytes) {
      enqueue(ncclSend(d, bytes, ncclUint8, root, comm_, stream_), "ncclSend");
    }
    enqueue(ncclGroupEnd(), "ncclGroupEnd");
    if (rank_ == root)
      unstage(out, recv, total);
    else
      unstage(nullptr, nullptr, 0);
  }
  void barrier() override {
    double x = 0;
    allreduce_sum(&x, 1);
  }
  std::unique_ptr<Communicator> duplicate() override {
    return std::unique_ptr<Communicator>(new NcclCommunicator(*this));
  }

 private:
  // duplicate(): a split of the same ranks.
  NcclCommunicator(NcclCommunicator& parent)
      : rank_(parent.rank_), size_(parent.size_), timeout_(parent.timeout_) {
    init([&](ncclConfig_t* config) {
      return ncclCommSplit(parent.comm_, 0, rank_, &comm_, config);
    });
  }

  // Orders what comes next on the communication stream after everything queued on the compute
  // stream so far: the kernels that produced a bucket's gradients, or the optimizer's update.
  void after_compute() {
    TERN_CUDA_CHECK(cudaEventRecord(ready_, cuda::compute_stream()));
    TERN_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_));
  }

  template <class Create>
  void init(Create create) {
    TERN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    TERN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    TERN_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    enqueue(create(&config), "ncclCommInitRankConfig");
  }

  void check(ncclResult_t st, const char* call) {
    if (st == ncclSuccess || st == ncclInProgress) return;
    std::string msg = std::string(call) + ": " + ncclGetErrorString(st);
    if (comm_) {
      const char* last = ncclGetLastError(comm_);
      if (last && *last) msg += std::string(" (") + last + ")";
    }
    throw std::runtime_error("NCCL error on rank " + std::to_string(rank_) + ": " + msg);
  }

  // A non-blocking communicator may answer ncclInProgress: the call completes in the background,
  // and the next call must wait for it.
  void enqueue(ncclResult_t st, const char* call) {
    check(st, call);
    if (!comm_) return;
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_);
    for (;;) {
      ncclResult_t async = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
      if (async == ncclSuccess) return;
      if (async != ncclInProgress) fail(async, call);
      if (Clock::now() > deadline) timeout(call);
      std::this_thread::yield();
    }
  }

  void wait_event(cudaEvent_t e, const char* what) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_);
    for (;;) {
      const cudaError_t q = cudaEventQuery(e);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) TERN_CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
      if (async != ncclSuccess && async != ncclInProgress) fail(async, what);
      if (Clock::now() > deadline) timeout(what);
      std::this_thread::yield();
    }
  }

  [[noreturn]] void fail(ncclResult_t st, const char* what) {
    std::string msg = std::string(what) + ": " + ncclGetErrorString(st);
    const char* last = ncclGetLastError(comm_);
    if (last && *last) msg += std::string(" (") + last + ")";
    ncclCommAbort(comm_);
    comm_ = nullptr;
    throw std::runtime_error("NCCL error on rank " + std::to_string(rank_) + ": " + msg);
  }

  [[noreturn]] void timeout(const char* what) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    throw std::runtime_error("NCCL " + std::string(what) + " on rank " + std::to_string(rank_) +
                             " did not finish within " + std::to_string(timeout_) +
                             " s (dist.timeout_seconds): a peer is gone or stuck; communicator "
                             "aborted");
  }

  // Device staging for collectives on host buffers (rare: setup and checks, not the step).
  void* stage(size_t bytes, const void* host) {
    if (bytes > staging_bytes_) {
      if (staging_) cuda::device_free(staging_);
      staging_ = cuda::device_alloc(bytes);
      staging_bytes_ = bytes;
      TERN_CUDA_CHECK(cudaStreamSynchronize(cuda::compute_stream()));  // the pool allocated there
    }
    if (host)
      TERN_CUDA_CHECK(cudaMemcpyAsync(staging_, host, bytes, cudaMemcpyHostToDevice, stream_));
    return staging_;
  }
  void unstage(void* host, const void* device, size_t bytes) {
    if (host && bytes)
      TERN_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
    TERN_CUDA_CHECK(cudaEventRecord(done_, stream_));
    wait_event(done_, "collective");
  }

  int rank_, size_;
  double timeout_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
  bool pending_ = false;
};

}  // namespace

}  // namespace tern

// libtern_nccl.so's one entry (src/dist/nccl_loader.cpp loads it); the caller owns the result.
// Exceptions cross the boundary: both sides share one C++ runtime.
extern "C" __attribute__((visibility("default"))) tern::Communicator* tern_nccl_communicator(
    tern::Communicator* host, double timeout_seconds) {
  return new tern::NcclCommunicator(*host, timeout_seconds);
}
