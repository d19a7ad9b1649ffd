#pragma once
// The one clock for durations (steps, requests, deadlines): monotonic.
#include <chrono>

namespace tern {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace tern
