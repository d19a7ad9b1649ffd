#include "tern/serve/admission.h"

#include <algorithm>

namespace tern::serve {

bool AdmissionGate::try_enter(int64_t priority, int64_t levels) {
  if (limit_ <= 0) {
    inflight_.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }
  levels = std::max<int64_t>(levels, 1);
  const int64_t p = std::clamp<int64_t>(priority, 1, levels);
  const int64_t room = std::max<int64_t>(1, limit_ * (levels - p + 1) / levels);
  // Compare and swap: a caller never sees the count raised by one that is refused.
  int64_t n = inflight_.load(std::memory_order_relaxed);
  while (n < room)
    if (inflight_.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) return true;
  shed_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

}  // namespace tern::serve
