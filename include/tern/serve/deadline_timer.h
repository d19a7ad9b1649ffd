#pragma once
// One thread that runs callbacks at their time: the deadlines of requests that are running (a
// request still queued at its deadline is answered by the batcher). A callback must be short; it
// runs on the timer's thread.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "tern/base/clock.h"

namespace tern::serve {

class DeadlineTimer {
 public:
  DeadlineTimer();
  ~DeadlineTimer();
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  using Id = std::pair<Clock::time_point, uint64_t>;
  Id schedule(Clock::time_point at, std::function<void()> fn);
  // Drops a callback that has not run yet (a request answered in time).
  void cancel(const Id& id);
  size_t pending() const;

 private:
  void loop();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  uint64_t changes_ = 0;  // bumped when an earlier deadline arrives, to wake the loop
  std::map<Id, std::function<void()>> due_;
  uint64_t next_ = 0;
  std::thread thread_;
};

}  // namespace tern::serve
