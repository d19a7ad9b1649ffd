#pragma once
// A circuit breaker per model version, with resilience4j's count-based semantics: a version
// that fails (or answers slowly) too often stops getting calls for a while, then gets a few
// trial calls that decide whether it is back.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "tern/base/clock.h"
#include "tern/serve/model_options.h"

namespace tern::serve {

class CircuitBreaker {
 public:
  enum class State { closed = 0, open = 1, half_open = 2 };
  // What acquire() hands out: whether the call may go, and which trial round it belongs to.
  struct Permit {
    bool allowed = false;
    uint64_t generation = 0;
  };

  // `name` (model and version) is what its log lines speak of.
  CircuitBreaker(BreakerOptions options, std::string name);
  // Whether a call may go now. Open: refused until open_seconds have passed, then half-open.
  // Half-open: the first half_open_calls calls go, the others are refused.
  Permit acquire(Clock::time_point now = Clock::now());
  // The outcome of a call that acquire() let through.
  void record(const Permit& permit, bool failed, double seconds,
              Clock::time_point now = Clock::now());
  // A call that acquire() let through but that never ran (refused by a full queue): its trial
  // permit goes back, so half-open still gets its half_open_calls outcomes.
  void release(const Permit& permit);
  State state(Clock::time_point now = Clock::now()) const;
  uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }
  uint64_t opened() const { return opened_.load(std::memory_order_relaxed); }
  bool enabled() const { return options_.enabled; }

 private:
  struct Outcome {
    bool failed = false, slow = false;
  };
  void open(Clock::time_point now);  // mu_ held
  void close();                      // mu_ held
  bool tripped(const std::vector<Outcome>& outcomes, size_t count) const;

  const BreakerOptions options_;
  const std::string name_;
  mutable std::mutex mu_;
  State state_ = State::closed;
  uint64_t generation_ =
      0;  // changes at each transition: late outcomes of an old state are dropped
  std::vector<Outcome> window_;  // ring of the last options_.window calls (closed)
  size_t next_ = 0, filled_ = 0;
  Clock::time_point open_until_{};
  int64_t trials_issued_ = 0;
  std::vector<Outcome> trials_;  // half-open outcomes
  std::atomic<uint64_t> rejected_{0}, opened_{0};
};

const char* breaker_state_name(CircuitBreaker::State state);

}  // namespace tern::serve
