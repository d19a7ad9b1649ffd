#pragma once
// The server-wide limit on requests in flight (queued or running, over every model), so that
// overload is answered at once (429 with Retry-After) instead of growing queues and memory.
// Priority levels share it as the batcher's queues do: level p of L may enter while fewer than
// limit * (L - p + 1) / L requests are in flight.
#include <atomic>
#include <cstdint>

namespace tern::serve {

class AdmissionGate {
 public:
  explicit AdmissionGate(int64_t limit) : limit_(limit) {}  // 0: unbounded
  // Enters if there is room for this priority; false otherwise (and nothing changes).
  bool try_enter(int64_t priority, int64_t levels);
  void leave() { inflight_.fetch_sub(1, std::memory_order_acq_rel); }
  int64_t inflight() const { return inflight_.load(std::memory_order_relaxed); }
  int64_t limit() const { return limit_; }
  uint64_t shed() const { return shed_.load(std::memory_order_relaxed); }

 private:
  const int64_t limit_;
  std::atomic<int64_t> inflight_{0};
  std::atomic<uint64_t> shed_{0};
};

}  // namespace tern::serve
