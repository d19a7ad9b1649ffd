#pragma once
// One background thread and the mutex, condition variable and stop flag its loop shares with the
// threads that feed it or wait for it (the checkpoint uploader, the loader's prefetch, the spot
// notice poller, the repository poller). The loop takes the lock from lock() and sleeps in
// wait(), which returns false once stop() was called; callers change the shared state under
// lock() and call notify(). stop(), also run by the destructor, sets the flag, wakes the thread
// and joins it. (The batcher's and the CPU op pool's workers are pools of many threads, with
// their own queues and, for the op pool, spinning: they keep their own loops.)
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace tern {

class BackgroundWorker {
 public:
  using Lock = std::unique_lock<std::mutex>;
  BackgroundWorker() = default;
  ~BackgroundWorker() { stop(); }
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;

  void start(std::function<void()> loop) { thread_ = std::thread(std::move(loop)); }
  // Idempotent; call it before destroying state the loop uses.
  void stop() {
    {
      std::lock_guard guard(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  Lock lock() const { return Lock(mu_); }
  void notify() { cv_.notify_all(); }
  bool stopping(const Lock&) const { return stopping_; }

  // Waits until ready() or stop(); false when stopping.
  template <class Ready>
  bool wait(Lock& lock, Ready ready) {
    cv_.wait(lock, [&] { return stopping_ || ready(); });
    return !stopping_;
  }
  // The same, for at most `period`: false when stopping.
  template <class Rep, class Period>
  bool wait_for(Lock& lock, std::chrono::duration<Rep, Period> period) {
    cv_.wait_for(lock, period, [&] { return stopping_; });
    return !stopping_;
  }
  // For callers waiting on the loop's progress (not on stop).
  template <class Ready>
  void wait_until(Lock& lock, Ready ready) {
    cv_.wait(lock, ready);
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tern
