#include "tern/serve/circuit_breaker.h"

#include <spdlog/spdlog.h>

namespace tern::serve {

const char* breaker_state_name(CircuitBreaker::State state) {
  switch (state) {
    case CircuitBreaker::State::open:
      return "open";
    case CircuitBreaker::State::half_open:
      return "half_open";
    case CircuitBreaker::State::closed:
      break;
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(BreakerOptions options, std::string name)
    : options_(options), name_(std::move(name)), window_(static_cast<size_t>(options.window)) {}

bool CircuitBreaker::tripped(const std::vector<Outcome>& outcomes, size_t count) const {
  size_t failed = 0, slow = 0;
  for (size_t i = 0; i < count; ++i) {
    failed += outcomes[i].failed;
    slow += outcomes[i].slow;
  }
  const double n = static_cast<double>(count);
  return 100.0 * static_cast<double>(failed) / n >= options_.failure_rate ||
         100.0 * static_cast<double>(slow) / n >= options_.slow_call_rate;
}

void CircuitBreaker::open(Clock::time_point now) {
  state_ = State::open;
  ++generation_;
  open_until_ = now + std::chrono::duration_cast<Clock::duration>(
                          std::chrono::duration<double>(options_.open_seconds));
  opened_.fetch_add(1, std::memory_order_relaxed);
  spdlog::warn("{}: circuit breaker open for {} s", name_, options_.open_seconds);
}

void CircuitBreaker::close() {
  state_ = State::closed;
  ++generation_;
  next_ = filled_ = 0;
  spdlog::info("{}: circuit breaker closed: the trial calls passed", name_);
}

CircuitBreaker::Permit CircuitBreaker::acquire(Clock::time_point now) {
  if (!options_.enabled) return {true, 0};
  std::lock_guard lock(mu_);
  if (state_ == State::open && now >= open_until_) {
    state_ = State::half_open;
    ++generation_;
    trials_issued_ = 0;
    trials_.clear();
    spdlog::info("{}: circuit breaker half-open: {} trial call(s)", name_,
                 options_.half_open_calls);
  }
  if (state_ == State::closed) return {true, generation_};
  if (state_ == State::half_open && trials_issued_ < options_.half_open_calls) {
    ++trials_issued_;
    return {true, generation_};
  }
  rejected_.fetch_add(1, std::memory_order_relaxed);
  return {false, generation_};
}

void CircuitBreaker::record(const Permit& permit, bool failed, double seconds,
                            Clock::time_point now) {
  if (!options_.enabled || !permit.allowed) return;
  const Outcome outcome{failed, seconds * 1000.0 >= options_.slow_call_ms};
  std::lock_guard lock(mu_);
  if (permit.generation != generation_) return;  // began under a state that has since ended
  if (state_ == State::closed) {
    window_[next_] = outcome;
    next_ = (next_ + 1) % window_.size();
    filled_ = std::min(filled_ + 1, window_.size());
    if (static_cast<int64_t>(filled_) >= options_.min_calls && tripped(window_, filled_)) open(now);
  } else if (state_ == State::half_open) {
    trials_.push_back(outcome);
    if (static_cast<int64_t>(trials_.size()) < options_.half_open_calls) return;
    if (tripped(trials_, trials_.size()))
      open(now);
    else
      close();
  }
}

void CircuitBreaker::release(const Permit& permit) {
  if (!options_.enabled || !permit.allowed) return;
  std::lock_guard lock(mu_);
  if (permit.generation == generation_ && state_ == State::half_open && trials_issued_ > 0)
    --trials_issued_;
}

CircuitBreaker::State CircuitBreaker::state(Clock::time_point now) const {
  std::lock_guard lock(mu_);
  // Open past its wait reads as half-open: the next call is a trial.
  if (state_ == State::open && now >= open_until_) return State::half_open;
  return state_;
}

}  // namespace tern::serve
