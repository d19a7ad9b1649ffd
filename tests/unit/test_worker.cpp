// BackgroundWorker: the loop sees what callers hand it under the lock, a stop wakes a loop that
// sleeps (for a long period or until work comes) at once, and stop is idempotent. Run under
// ThreadSanitizer too (the debug-tsan preset).
#include <gtest/gtest.h>

#include <chrono>
#include <deque>

#include "tern/base/worker.h"

namespace tern {
namespace {

using namespace std::chrono_literals;

TEST(BackgroundWorker, TheLoopTakesWorkAndStopWakesItAtOnce) {
  BackgroundWorker worker;
  std::deque<int> queue;
  int done = 0;
  worker.start([&] {
    auto lock = worker.lock();
    while (worker.wait(lock, [&] { return !queue.empty(); })) {
      done += queue.front();
      queue.pop_front();
      worker.notify();
    }
  });
  for (int i = 1; i <= 100; ++i) {
    auto lock = worker.lock();
    queue.push_back(i);
    worker.notify();
  }
  {
    auto lock = worker.lock();
    worker.wait_until(lock, [&] { return queue.empty(); });
    EXPECT_EQ(done, 5050);
  }
  const auto start = std::chrono::steady_clock::now();
  worker.stop();
  worker.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(BackgroundWorker, APeriodicLoopEndsWhenStoppedMidPeriod) {
  BackgroundWorker worker;
  int rounds = 0;
  worker.start([&] {
    auto lock = worker.lock();
    while (worker.wait_for(lock, 1h)) ++rounds;
  });
  const auto start = std::chrono::steady_clock::now();
  worker.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ(rounds, 0);
  EXPECT_TRUE(worker.stopping(worker.lock()));
}

}  // namespace
}  // namespace tern
