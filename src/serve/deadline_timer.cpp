#include "tern/serve/deadline_timer.h"

#include <spdlog/spdlog.h>

namespace tern::serve {

DeadlineTimer::DeadlineTimer() : thread_([this] { loop(); }) {}

DeadlineTimer::~DeadlineTimer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

DeadlineTimer::Id DeadlineTimer::schedule(Clock::time_point at, std::function<void()> fn) {
  std::unique_lock lock(mu_);
  const Id id{at, next_++};
  const bool earliest = due_.empty() || id < due_.begin()->first;
  due_.emplace(id, std::move(fn));
  if (earliest) ++changes_;
  lock.unlock();
  if (earliest) cv_.notify_all();
  return id;
}

void DeadlineTimer::cancel(const Id& id) {
  std::lock_guard lock(mu_);
  due_.erase(id);
}

size_t DeadlineTimer::pending() const {
  std::lock_guard lock(mu_);
  return due_.size();
}

void DeadlineTimer::loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (due_.empty()) {
      cv_.wait(lock, [&] { return stopping_ || !due_.empty(); });
      continue;
    }
    const auto at = due_.begin()->first.first;
    if (Clock::now() < at) {
      const uint64_t seen = changes_;
      cv_.wait_until(lock, at, [&] { return stopping_ || changes_ != seen; });
      continue;
    }
    auto fn = std::move(due_.begin()->second);
    due_.erase(due_.begin());
    lock.unlock();
    try {
      fn();
    } catch (const std::exception& e) {
      spdlog::error("deadline callback: {}", e.what());
    }
    lock.lock();
  }
}

}  // namespace tern::serve
