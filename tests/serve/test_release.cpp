// Safe releases in tern-serve: the circuit breaker, priority queues and deadlines in the batcher,
// the server-wide admission gate, the deadline timer, sticky traffic weights, the progressive
// rollout controller (with a clock of the test's own), the new config.ini keys and Triton's JSON
// configuration, and, through the router, the model control API (bearer token, explicit mode),
// deadlines with fallbacks, and breakers and NaN answers driven by a [fault] control file.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "fake_model.h"
#include "temp_dir.h"
#include "tern/base/error.h"
#include "tern/serve/admission.h"
#include "tern/serve/circuit_breaker.h"
#include "tern/serve/deadline_timer.h"
#include "tern/serve/fault_injection.h"
#include "tern/serve/model_options.h"
#include "tern/serve/repository.h"
#include "tern/serve/rollout.h"
#include "tern/serve/router.h"
#include "tern/serve/scheduler.h"
#include "tern/serve/shadow.h"

namespace tern::serve {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- the circuit breaker ---------------------------------------------------------------------

BreakerOptions small_breaker() {
  BreakerOptions o;
  o.enabled = true;
  o.window = 4;
  o.min_calls = 4;
  o.failure_rate = 50;
  o.slow_call_ms = 250;
  o.slow_call_rate = 100;
  o.open_seconds = 10;
  o.half_open_calls = 2;
  return o;
}

// One call through the breaker at `now`: acquired, then recorded with its outcome.
bool call_through(CircuitBreaker& b, Clock::time_point now, bool failed, double seconds = 0.01) {
  const auto permit = b.acquire(now);
  if (!permit.allowed) return false;
  b.record(permit, failed, seconds, now);
  return true;
}

TEST(ReleaseBreaker, OpensAtTheFailureRateOnceMinCallsWereMade) {
  CircuitBreaker b(small_breaker(), "m v1");
  const auto t0 = Clock::now();
  EXPECT_TRUE(b.enabled());
  // Three failures: 100% failed, but fewer than min_calls calls.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(call_through(b, t0, true));
  EXPECT_EQ(b.state(t0), CircuitBreaker::State::closed);
  EXPECT_EQ(b.opened(), 0u);
  // The fourth call (a success) makes 3 of 4 failed: 75% >= 50%.
  ASSERT_TRUE(call_through(b, t0, false));
  EXPECT_EQ(b.state(t0), CircuitBreaker::State::open);
  EXPECT_EQ(b.opened(), 1u);
}

TEST(ReleaseBreaker, TheWindowIsARingOfTheLastCallsAndTheRateIsInclusive) {
  CircuitBreaker b(small_breaker(), "m v1");
  const auto t0 = Clock::now();
  // ok ok ok fail: 25% < 50%.
  for (bool failed : {false, false, false, true}) ASSERT_TRUE(call_through(b, t0, failed));
  EXPECT_EQ(b.state(t0), CircuitBreaker::State::closed);
  // A failure replaces the oldest ok: fail ok ok fail, 50% >= 50%.
  ASSERT_TRUE(call_through(b, t0, true));
  EXPECT_EQ(b.state(t0), CircuitBreaker::State::open);
}

TEST(ReleaseBreaker, OpenRefusesThenHalfOpenGivesExactlyTheTrialPermitsAndSuccessesClose) {
  CircuitBreaker b(small_breaker(), "m v1");
  const auto t0 = Clock::now();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(call_through(b, t0, true));
  ASSERT_EQ(b.state(t0), CircuitBreaker::State::open);

  EXPECT_FALSE(b.acquire(t0 + 1s).allowed);
  EXPECT_FALSE(b.acquire(t0 + 9s).allowed);
  EXPECT_EQ(b.rejected(), 2u);
  EXPECT_EQ(b.state(t0 + 9s), CircuitBreaker::State::open);
  // open_seconds later it reads half-open, and hands out half_open_calls permits.
  EXPECT_EQ(b.state(t0 + 10s), CircuitBreaker::State::half_open);
  const auto trial1 = b.acquire(t0 + 10s);
  const auto trial2 = b.acquire(t0 + 10s);
  const auto third = b.acquire(t0 + 10s);
  EXPECT_TRUE(trial1.allowed);
  EXPECT_TRUE(trial2.allowed);
  EXPECT_FALSE(third.allowed);
  EXPECT_EQ(b.rejected(), 3u);
  EXPECT_EQ(b.state(t0 + 10s), CircuitBreaker::State::half_open);

  b.record(trial1, false, 0.01, t0 + 10s);
  EXPECT_EQ(b.state(t0 + 10s), CircuitBreaker::State::half_open);  // one of two trials in
  b.record(trial2, false, 0.01, t0 + 10s);
  EXPECT_EQ(b.state(t0 + 10s), CircuitBreaker::State::closed);
  EXPECT_EQ(b.opened(), 1u);
  // Closed afresh: the window restarted, so three failures do not reopen it.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(call_through(b, t0 + 11s, true));
  EXPECT_EQ(b.state(t0 + 11s), CircuitBreaker::State::closed);
}

TEST(ReleaseBreaker, FailedTrialsReopenForAnotherOpenSeconds) {
  CircuitBreaker b(small_breaker(), "m v1");
  const auto t0 = Clock::now();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(call_through(b, t0, true));
  const auto trial1 = b.acquire(t0 + 10s);
  const auto trial2 = b.acquire(t0 + 10s);
  ASSERT_TRUE(trial1.allowed && trial2.allowed);
  b.record(trial1, true, 0.01, t0 + 10s);
  b.record(trial2, false, 0.01, t0 + 10s);  // 1 of 2 failed: 50% >= 50%
  EXPECT_EQ(b.opened(), 2u);
  EXPECT_EQ(b.state(t0 + 11s), CircuitBreaker::State::open);
  EXPECT_FALSE(b.acquire(t0 + 19s).allowed);  // the new wait counts from the reopening
  EXPECT_EQ(b.state(t0 + 20s), CircuitBreaker::State::half_open);
  EXPECT_TRUE(b.acquire(t0 + 20s).allowed);
}

TEST(ReleaseBreaker, SlowCallsTripItAtTheSlowCallRate) {
  BreakerOptions o = small_breaker();
  o.failure_rate = 100;
  o.slow_call_ms = 250;
  o.slow_call_rate = 50;
  CircuitBreaker b(o, "m v1");
  const auto t0 = Clock::now();
  // 0.249 s is not slow, 0.25 s is (seconds * 1000 >= slow_call_ms); none of them failed.
  for (double s : {0.249, 0.249, 0.25, 0.01}) ASSERT_TRUE(call_through(b, t0, false, s));
  EXPECT_EQ(b.state(t0), CircuitBreaker::State::closed);  // 1 of 4 slow: 25%
  ASSERT_TRUE(call_through(b, t0, false, 3.0));           // slow, 249 fast, slow, fast: 50%
  EXPECT_EQ(b.state(t0), CircuitBreaker::State::open);
}

TEST(ReleaseBreaker, OutcomesOfAnEarlierGenerationAreIgnored) {
  CircuitBreaker b(small_breaker(), "m v1");
  const auto t0 = Clock::now();
  const auto stale = b.acquire(t0);  // taken while closed, answered after the breaker moved on
  ASSERT_TRUE(stale.allowed);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(call_through(b, t0, true));
  ASSERT_EQ(b.state(t0), CircuitBreaker::State::open);
  const auto trial1 = b.acquire(t0 + 10s);
  const auto trial2 = b.acquire(t0 + 10s);
  ASSERT_TRUE(trial1.allowed && trial2.allowed);
  EXPECT_NE(stale.generation, trial1.generation);
  // Counted as a trial, this failure would reopen the breaker with the first trial's success.
  b.record(stale, true, 0.01, t0 + 10s);
  b.record(trial1, false, 0.01, t0 + 10s);
  EXPECT_EQ(b.state(t0 + 10s), CircuitBreaker::State::half_open);
  b.record(trial2, false, 0.01, t0 + 10s);
  EXPECT_EQ(b.state(t0 + 10s), CircuitBreaker::State::closed);
  EXPECT_EQ(b.opened(), 1u);
  // A refused permit's outcome is ignored too.
  b.record(CircuitBreaker::Permit{false, trial1.generation}, true, 0.01, t0 + 10s);
  EXPECT_EQ(b.state(t0 + 10s), CircuitBreaker::State::closed);
}

TEST(ReleaseBreaker, ADisabledBreakerAlwaysAllows) {
  CircuitBreaker b(BreakerOptions{}, "m v1");
  EXPECT_FALSE(b.enabled());
  const auto t0 = Clock::now();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(call_through(b, t0 + i * 1ms, true, 60.0));
  EXPECT_EQ(b.state(t0 + 1s), CircuitBreaker::State::closed);
  EXPECT_EQ(b.rejected(), 0u);
  EXPECT_EQ(b.opened(), 0u);
  EXPECT_STREQ(breaker_state_name(CircuitBreaker::State::half_open), "half_open");
  EXPECT_STREQ(breaker_state_name(CircuitBreaker::State::open), "open");
  EXPECT_STREQ(breaker_state_name(CircuitBreaker::State::closed), "closed");
}

// ---- the batcher: priority levels and deadlines ----------------------------------------------

Job one_row_job(float value, int64_t priority, std::function<void(JobResult&&)> done) {
  Job j;
  j.rows = 1;
  j.input.features = {value};
  j.priority = priority;
  j.done = std::move(done);
  return j;
}

TEST(ReleaseBatcher, QueueLimitsPerPriorityLevel) {
  std::promise<void> started, release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> answered{0};
  auto model = [&started, gate](const InputRows& in, int64_t rows, float* out) {
    if (in.features[0] < 0) {  // the blocker
      started.set_value();
      gate.wait();
    }
    std::fill(out, out + rows, 1.0f);
  };
  auto stats = std::make_shared<VersionStats>("m", 1);
  Batcher batcher({model}, 1, 1, BatcherOptions{1, 0, 4, 2}, stats);
  EXPECT_EQ(batcher.limit_for(1), 4);
  EXPECT_EQ(batcher.limit_for(2), 2);
  EXPECT_EQ(batcher.limit_for(9), 2);  // clamped to the lowest level
  EXPECT_EQ(batcher.limit_for(0), 4);  // clamped to the highest

  auto done = [&answered](JobResult&& r) {
    EXPECT_TRUE(r.error.empty());
    EXPECT_FALSE(r.expired);
    ++answered;
  };
  ASSERT_EQ(batcher.submit(one_row_job(-1, 2, done)), SubmitResult::queued);
  started.get_future().wait();  // the worker holds the blocker: the queue is empty
  EXPECT_EQ(batcher.submit(one_row_job(1, 2, done)), SubmitResult::queued);
  EXPECT_EQ(batcher.submit(one_row_job(2, 2, done)), SubmitResult::queued);
  Job refused = one_row_job(3, 2, done);
  EXPECT_EQ(batcher.submit(std::move(refused)), SubmitResult::full);  // 2 waiting: level 2's limit
  EXPECT_TRUE(refused.done);                                          // left as it was
  EXPECT_EQ(batcher.submit(one_row_job(4, 1, done)), SubmitResult::queued);
  EXPECT_EQ(batcher.submit(one_row_job(5, 1, done)), SubmitResult::queued);
  EXPECT_EQ(batcher.submit(one_row_job(6, 1, done)), SubmitResult::full);  // 4 waiting
  EXPECT_EQ(batcher.queued(), 4u);
  release.set_value();
  batcher.stop();
  EXPECT_EQ(answered.load(), 5);
  EXPECT_EQ(batcher.submit(one_row_job(7, 1, done)), SubmitResult::stopped);

  // Unbounded: no limit at any level.
  Batcher unbounded({}, 1, 1, BatcherOptions{1, 0, 0, 3}, std::make_shared<VersionStats>("m", 2));
  EXPECT_EQ(unbounded.limit_for(1), 0);
  EXPECT_EQ(unbounded.limit_for(3), 0);
  // Three levels of 4: 4, 8/3 -> 2, 4/3 -> 1.
  Batcher three({}, 1, 1, BatcherOptions{1, 0, 4, 3}, std::make_shared<VersionStats>("m", 3));
  EXPECT_EQ(three.limit_for(1), 4);
  EXPECT_EQ(three.limit_for(2), 2);
  EXPECT_EQ(three.limit_for(3), 1);
}

TEST(ReleaseBatcher, AJobPastItsDeadlineIsAnsweredExpiredAndNeverRuns) {
  std::atomic<int> calls{0};
  auto stats = std::make_shared<VersionStats>("m", 1);
  Batcher batcher({[&calls](const InputRows& in, int64_t rows, float* out) {
                    ++calls;
                    std::fill(out, out + rows, in.features[0] + 100);
                  }},
                  1, 1, BatcherOptions{4, 0, 16, 1}, stats);
  std::promise<JobResult> late, in_time;
  Job j = one_row_job(5, 1, [&late](JobResult&& r) { late.set_value(std::move(r)); });
  j.deadline = Clock::now() - 1ms;
  ASSERT_EQ(batcher.submit(std::move(j)), SubmitResult::queued);
  const JobResult expired = late.get_future().get();
  EXPECT_TRUE(expired.expired);
  EXPECT_TRUE(expired.error.empty());
  EXPECT_TRUE(expired.output.empty());
  EXPECT_EQ(expired.input.features, std::vector<float>{5});  // handed back
  EXPECT_EQ(calls.load(), 0);

  Job k = one_row_job(6, 1, [&in_time](JobResult&& r) { in_time.set_value(std::move(r)); });
  k.deadline = Clock::now() + 10s;
  ASSERT_EQ(batcher.submit(std::move(k)), SubmitResult::queued);
  const JobResult ran = in_time.get_future().get();
  EXPECT_FALSE(ran.expired);
  EXPECT_EQ(ran.output, std::vector<float>{106});
  EXPECT_EQ(calls.load(), 1);
  batcher.stop();
  EXPECT_EQ(stats->pending.load(), 0);
  EXPECT_EQ(stats->execution_count.load(), 1u);
}

TEST(ReleaseBatcher, HigherPriorityJobsRunFirst) {
  std::promise<void> started, release;
  std::shared_future<void> gate = release.get_future().share();
  std::mutex mu;
  std::vector<float> order;
  auto model = [&](const InputRows& in, int64_t rows, float* out) {
    const float v = in.features[0];
    {
      std::lock_guard lock(mu);
      order.push_back(v);
    }
    if (v == 0) {
      started.set_value();
      gate.wait();
    }
    std::fill(out, out + rows, v);
  };
  std::atomic<int> answered{0};
  auto done = [&answered](JobResult&& r) {
    EXPECT_EQ(r.output.size(), 1u);
    ++answered;
  };
  auto stats = std::make_shared<VersionStats>("m", 1);
  Batcher batcher({model}, 1, 1, BatcherOptions{1, 0, 0, 2}, stats);  // one row per batch
  ASSERT_EQ(batcher.submit(one_row_job(0, 2, done)), SubmitResult::queued);
  started.get_future().wait();
  // EXPECT, not ASSERT, until the blocker is released: the batcher's destructor joins its worker.
  EXPECT_EQ(batcher.submit(one_row_job(1, 2, done)), SubmitResult::queued);
  EXPECT_EQ(batcher.submit(one_row_job(2, 1, done)), SubmitResult::queued);
  EXPECT_EQ(batcher.submit(one_row_job(3, 2, done)), SubmitResult::queued);
  EXPECT_EQ(batcher.submit(one_row_job(4, 1, done)), SubmitResult::queued);
  release.set_value();
  batcher.stop();
  EXPECT_EQ(answered.load(), 5);
  std::lock_guard lock(mu);
  EXPECT_EQ(order, (std::vector<float>{0, 2, 4, 1, 3}));  // level 1 in order, then level 2
}

// ---- the admission gate and the deadline timer -----------------------------------------------

TEST(ReleaseAdmission, PriorityLevelsShareTheServerLimit) {
  AdmissionGate gate(4);
  EXPECT_EQ(gate.limit(), 4);
  EXPECT_TRUE(gate.try_enter(2, 2));
  EXPECT_TRUE(gate.try_enter(2, 2));
  EXPECT_FALSE(gate.try_enter(2, 2));  // level 2 of 2: half the limit
  EXPECT_EQ(gate.shed(), 1u);
  EXPECT_EQ(gate.inflight(), 2);  // a refusal changes nothing
  EXPECT_TRUE(gate.try_enter(1, 2));
  EXPECT_TRUE(gate.try_enter(1, 2));
  EXPECT_FALSE(gate.try_enter(1, 2));  // level 1: the whole limit
  EXPECT_EQ(gate.shed(), 2u);
  EXPECT_EQ(gate.inflight(), 4);
  gate.leave();
  EXPECT_EQ(gate.inflight(), 3);
  EXPECT_FALSE(gate.try_enter(2, 2));  // 3 in flight: still no room for level 2
  EXPECT_EQ(gate.shed(), 3u);
  EXPECT_TRUE(gate.try_enter(1, 2));
  gate.leave();
  gate.leave();
  EXPECT_EQ(gate.inflight(), 2);
  EXPECT_FALSE(gate.try_enter(2, 2));
  gate.leave();
  EXPECT_TRUE(gate.try_enter(2, 2));
  EXPECT_EQ(gate.shed(), 4u);

  AdmissionGate unbounded(0);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(unbounded.try_enter(3, 3));
  EXPECT_EQ(unbounded.shed(), 0u);
  EXPECT_EQ(unbounded.inflight(), 100);
}

TEST(ReleaseDeadlineTimer, RunsCallbacksInTimeOrderAndCancelDropsOne) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> order;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> times;  // (due, ran)
  DeadlineTimer timer;
  const auto t0 = Clock::now();
  auto at = [&](int value, Clock::duration offset) {
    const auto due = t0 + offset;
    return timer.schedule(due, [&, value, due] {
      std::lock_guard lock(mu);
      order.push_back(value);
      times.emplace_back(due, Clock::now());
      cv.notify_all();
    });
  };
  at(3, 300ms);
  at(1, 100ms);  // earlier than the one the thread waits for: it must wake up
  const auto dropped = at(99, 150ms);
  at(2, 200ms);
  EXPECT_EQ(timer.pending(), 4u);
  timer.cancel(dropped);
  EXPECT_EQ(timer.pending(), 3u);
  timer.cancel(dropped);  // twice: nothing happens
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 3s, [&] { return order.size() >= 3; }));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  for (const auto& [due, ran] : times) EXPECT_GE(ran, due);
  lock.unlock();
  EXPECT_EQ(timer.pending(), 0u);
}

TEST(ReleaseDeadlineTimer, DestroyingItDropsWhatIsPending) {
  std::atomic<bool> ran{false};
  const auto start = Clock::now();
  {
    DeadlineTimer timer;
    timer.schedule(Clock::now() + 10s, [&ran] { ran = true; });
    EXPECT_EQ(timer.pending(), 1u);
  }
  EXPECT_FALSE(ran.load());
  EXPECT_LT(Clock::now() - start, 2s);  // did not wait for the callback's time
}

// ---- sticky traffic weights ------------------------------------------------------------------

ModelState three_versions() {
  ModelState state;
  state.name = "m";
  for (int64_t v : {1, 2, 3}) {
    auto lv = std::make_shared<LoadedVersion>();
    lv->model.assign(1, 'm');
    lv->version = v;
    state.versions[v] = lv;
  }
  return state;
}

TEST(ReleaseModelState, AKeyKeepsItsVersionAndKeysSpreadByWeight) {
  ModelState state = three_versions();
  const Weights weights = {{1, 50}, {2, 50}};
  const int64_t first = state.choose(&weights, std::string_view("user-42"))->version;
  EXPECT_NE(first, 3);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(state.choose(&weights, std::string_view("user-42"))->version, first);
  std::map<int64_t, int> counts;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = "key-" + std::to_string(i);
    ++counts[state.choose(&weights, std::string_view(key))->version];
  }
  EXPECT_EQ(counts[3], 0);
  EXPECT_GE(counts[1], 350);
  EXPECT_LE(counts[1], 650);
  EXPECT_GE(counts[2], 350);
  EXPECT_LE(counts[2], 650);
}

TEST(ReleaseModelState, AGrowingCanaryKeepsTheKeysItHad) {
  ModelState state = three_versions();
  const Weights ten = {{1, 90}, {2, 10}}, twenty = {{1, 80}, {2, 20}};
  int on_canary = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = "session-" + std::to_string(i);
    const int64_t before = state.choose(&ten, std::string_view(key))->version;
    const int64_t after = state.choose(&twenty, std::string_view(key))->version;
    if (before == 2) {
      ++on_canary;
      EXPECT_EQ(after, 2) << key << " left the canary when it grew";
    }
  }
  EXPECT_GE(on_canary, 50);
  EXPECT_LE(on_canary, 150);
}

TEST(ReleaseModelState, WeightsOverrideTrafficAndSkipVersionsNotLoaded) {
  ModelState state = three_versions();
  state.options.traffic = {{3, 100}};
  const Weights weights = {{1, 50}, {2, 50}};
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) {
    seen.insert(state.choose(&weights)->version);  // no key: random by the weights
    EXPECT_EQ(state.choose()->version, 3);         // no weights: the model's traffic
  }
  EXPECT_EQ(seen, (std::set<int64_t>{1, 2}));
  const Weights none;
  EXPECT_EQ(state.choose(&none, std::string_view("k"))->version, 3);  // empty: traffic again

  // A weight on a version that is not loaded: the loaded ones share the traffic.
  const Weights gone = {{9, 90}, {1, 10}};
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(state.choose(&gone)->version, 1);
    std::string key = "k";
    key += std::to_string(i);
    EXPECT_EQ(state.choose(&gone, std::string_view(key))->version, 1);
  }
  ModelState empty;
  EXPECT_EQ(empty.choose(&weights), nullptr);
}

// ---- the rollout controller ------------------------------------------------------------------

class ReleaseRollout : public ::testing::Test {
 protected:
  ReleaseRollout() {
    auto s = std::make_shared<ModelState>();
    s->name = "m";
    s->options.policy.kind = VersionPolicy::Kind::all;
    RolloutOptions& r = s->options.rollout;
    r.enabled = true;
    r.step_weight = 10;
    r.max_weight = 30;
    r.interval_seconds = 1;
    r.threshold = 2;
    r.min_requests = 5;
    for (int64_t v : {1, 2}) {
      auto lv = std::make_shared<LoadedVersion>();
      lv->model.assign(1, 'm');
      lv->version = v;
      s->versions[v] = lv;
    }
    model_ = s;
    snapshot_["m"] = s;
  }
  std::unique_ptr<RolloutController> controller() {
    return std::make_unique<RolloutController>(
        dir_.path(), stats_, shadows_,
        [](const std::string&, int64_t) -> std::optional<double> { return std::nullopt; });
  }
  // Requests the canary (or any version) answered: `ok` successes and `failed` server failures,
  // each taking `latency_ns`.
  void serve(int64_t version, int ok, int failed, uint64_t latency_ns = 10'000'000) {
    auto s = stats_.get("m", version);
    for (int i = 0; i < ok; ++i) {
      s->success.add(latency_ns);
      s->request_seconds.observe_ns(latency_ns);
    }
    for (int i = 0; i < failed; ++i) {
      s->server_failures.fetch_add(1);
      s->request_seconds.observe_ns(latency_ns);
    }
  }
  // The start of interval k (a little over interval_seconds apart).
  Clock::time_point at(int k) const { return t0_ + k * std::chrono::milliseconds(1100); }
  std::vector<json> decision_lines() const {
    std::vector<json> out;
    std::ifstream in(fs::path(dir_.path()) / "rollout.jsonl");
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      out.push_back(json::parse(line));
    }
    return out;
  }
  std::vector<std::string> decisions() const {
    std::vector<std::string> out;
    for (const auto& j : decision_lines()) out.push_back(j.at("decision").get<std::string>());
    return out;
  }
  RolloutState state_of(const RolloutController& c) const {
    auto s = c.state("m");
    EXPECT_TRUE(s.has_value());
    return s.value_or(RolloutState{});
  }

  tern::testing::TempDir dir_{"tern-release-rollout"};
  StatsRegistry stats_;
  ShadowRegistry shadows_;
  std::shared_ptr<ModelState> model_;
  Snapshot snapshot_;
  const Clock::time_point t0_ = Clock::now();
};

TEST_F(ReleaseRollout, HealthyIntervalsAdvanceThenPromote) {
  auto c = controller();
  EXPECT_FALSE(c->state("m").has_value());
  // (weights() would take the first step itself; the tick below does it at a known time)
  c->tick(snapshot_, at(0));
  RolloutState s = state_of(*c);
  EXPECT_EQ(s.phase, RolloutState::Phase::progressing);
  EXPECT_EQ(s.primary, 1);
  EXPECT_EQ(s.canary, 2);
  EXPECT_DOUBLE_EQ(s.weight, 10);
  EXPECT_EQ(c->weights(*model_), (Weights{{1, 90}, {2, 10}}));
  EXPECT_EQ(c->mirror_target("m"), 2);

  serve(2, 10, 0);
  c->tick(snapshot_, at(0) + 500ms);  // the interval has not ended: no check yet
  EXPECT_DOUBLE_EQ(state_of(*c).weight, 10);
  c->tick(snapshot_, at(1));
  EXPECT_DOUBLE_EQ(state_of(*c).weight, 20);
  EXPECT_EQ(c->weights(*model_), (Weights{{1, 80}, {2, 20}}));
  serve(2, 10, 0);
  c->tick(snapshot_, at(2));
  EXPECT_DOUBLE_EQ(state_of(*c).weight, 30);
  serve(2, 10, 0);
  c->tick(snapshot_, at(3));  // an interval at max_weight passed: promoted
  s = state_of(*c);
  EXPECT_EQ(s.phase, RolloutState::Phase::promoted);
  EXPECT_EQ(s.primary, 2);
  EXPECT_EQ(s.canary, 0);
  EXPECT_DOUBLE_EQ(s.weight, 0);
  EXPECT_FALSE(s.manual);
  EXPECT_EQ(c->weights(*model_), (Weights{{2, 100}}));
  EXPECT_EQ(c->mirror_target("m"), 0);
  c->tick(snapshot_, at(4));  // nothing newer: nothing to do
  EXPECT_EQ(state_of(*c).primary, 2);

  EXPECT_EQ(decisions(),
            (std::vector<std::string>{"initialize", "start", "advance", "advance", "promote"}));
  const auto lines = decision_lines();
  EXPECT_EQ(lines.back()["model"], "m");
  EXPECT_EQ(lines.back()["primary"], 2);
  EXPECT_EQ(lines[2]["requests"], 10);
  EXPECT_DOUBLE_EQ(lines[2]["success_rate"].get<double>(), 100);
  std::ifstream state_file(fs::path(dir_.path()) / "m.rollout.json");
  ASSERT_TRUE(state_file);
  const json saved = json::parse(state_file);
  EXPECT_EQ(saved["phase"], "promoted");
  EXPECT_EQ(saved["primary"], 2);

  std::string text;
  c->render(text);
  EXPECT_TRUE(contains(text, "tern_rollout_state{model=\"m\"} 2\n")) << text;
  EXPECT_TRUE(
      contains(text, "tern_rollout_weight{model=\"m\",version=\"2\",role=\"primary\"} 100\n"))
      << text;
}

TEST_F(ReleaseRollout, AnUnhealthyCanaryIsRolledBackAfterThresholdFailedChecksForGood) {
  auto c = controller();
  c->tick(snapshot_, at(0));
  serve(2, 8, 2);  // 80% success < 99%
  c->tick(snapshot_, at(1));
  RolloutState s = state_of(*c);
  EXPECT_EQ(s.phase, RolloutState::Phase::progressing);
  EXPECT_EQ(s.failed_checks, 1);
  EXPECT_DOUBLE_EQ(s.weight, 10);  // a failed check holds the weight
  serve(2, 8, 2);
  c->tick(snapshot_, at(2));
  s = state_of(*c);
  EXPECT_EQ(s.phase, RolloutState::Phase::failed);
  EXPECT_EQ(s.failed_checks, 2);
  EXPECT_DOUBLE_EQ(s.weight, 0);
  EXPECT_EQ(s.primary, 1);
  EXPECT_EQ(s.rolled_back, std::vector<int64_t>{2});
  EXPECT_EQ(c->weights(*model_), (Weights{{1, 100}}));

  // Healthy now, but a rolled-back version is never canaried again.
  serve(2, 20, 0);
  c->tick(snapshot_, at(3));
  c->tick(snapshot_, at(4));
  s = state_of(*c);
  EXPECT_EQ(s.phase, RolloutState::Phase::failed);
  EXPECT_DOUBLE_EQ(s.weight, 0);
  EXPECT_EQ(c->weights(*model_), (Weights{{1, 100}}));
  EXPECT_EQ(decisions(),
            (std::vector<std::string>{"initialize", "start", "check_failed", "rollback"}));
  const auto lines = decision_lines();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_DOUBLE_EQ(lines[2]["success_rate"].get<double>(), 80);
  ASSERT_TRUE(lines[3].contains("reasons"));
  EXPECT_TRUE(contains(lines[3]["reasons"][0].get<std::string>(), "success rate"))
      << lines[3].dump();
}

TEST_F(ReleaseRollout, TooFewRequestsWaitAndEachIntervalCountsItsOwn) {
  auto c = controller();
  c->tick(snapshot_, at(0));
  serve(2, 3, 0);
  c->tick(snapshot_, at(1));
  EXPECT_DOUBLE_EQ(state_of(*c).weight, 10);
  serve(2, 3, 0);  // 6 since the start, but 3 in this interval
  c->tick(snapshot_, at(2));
  EXPECT_DOUBLE_EQ(state_of(*c).weight, 10);
  EXPECT_EQ(state_of(*c).failed_checks, 0);
  serve(2, 5, 0);
  c->tick(snapshot_, at(3));
  EXPECT_DOUBLE_EQ(state_of(*c).weight, 20);
  EXPECT_EQ(decisions(), (std::vector<std::string>{"initialize", "start", "wait",
                                                   "advance"}));  // one wait per quiet spell
  EXPECT_EQ(decision_lines()[2]["requests"], 3);
}

TEST_F(ReleaseRollout, ASlowCanaryFailsTheP99CheckOfItsIntervalOnly) {
  auto c = controller();
  c->tick(snapshot_, at(0));
  serve(2, 10, 0, 900'000'000);  // 0.9 s each, max_p99_ms 500
  c->tick(snapshot_, at(1));
  RolloutState s = state_of(*c);
  EXPECT_EQ(s.failed_checks, 1);
  EXPECT_DOUBLE_EQ(s.weight, 10);
  auto lines = decision_lines();
  ASSERT_EQ(lines.back()["decision"], "check_failed");
  EXPECT_NEAR(lines.back()["p99_ms"].get<double>(), 995, 1);  // in the (0.5 s, 1 s] bucket
  EXPECT_TRUE(contains(lines.back()["reasons"][0].get<std::string>(), "p99"));
  serve(2, 10, 0);  // fast again: the slow calls of the last interval no longer count
  c->tick(snapshot_, at(2));
  s = state_of(*c);
  EXPECT_DOUBLE_EQ(s.weight, 20);
  EXPECT_EQ(s.failed_checks, 1);
  EXPECT_LT(decision_lines().back()["p99_ms"].get<double>(), 500);
}

TEST_F(ReleaseRollout, ARestartedControllerCarriesOnFromTheSavedState) {
  {
    auto a = controller();
    a->tick(snapshot_, at(0));
    serve(2, 10, 0);
    a->tick(snapshot_, at(1));
    ASSERT_DOUBLE_EQ(state_of(*a).weight, 20);
  }
  auto b = controller();
  EXPECT_FALSE(b->state("m").has_value());  // read on its first tick
  b->tick(snapshot_, at(5));
  RolloutState s = state_of(*b);
  EXPECT_EQ(s.phase, RolloutState::Phase::progressing);
  EXPECT_EQ(s.primary, 1);
  EXPECT_EQ(s.canary, 2);
  EXPECT_DOUBLE_EQ(s.weight, 20);  // not started over at step_weight
  EXPECT_EQ(b->weights(*model_), (Weights{{1, 80}, {2, 20}}));
  serve(2, 10, 0);
  b->tick(snapshot_, at(6));
  EXPECT_DOUBLE_EQ(state_of(*b).weight, 30);
  EXPECT_EQ(decisions(), (std::vector<std::string>{"initialize", "start", "advance", "advance"}));
  EXPECT_DOUBLE_EQ(decision_lines().back()["weight"].get<double>(), 30);
}

TEST_F(ReleaseRollout, AMalformedStateFileStartsOver) {
  dir_.write("m.rollout.json", "{\"phase\": \"sideways\"}\n");
  auto c = controller();
  c->tick(snapshot_, at(0));
  RolloutState s = state_of(*c);
  EXPECT_EQ(s.phase, RolloutState::Phase::progressing);
  EXPECT_EQ(s.primary, 1);
  EXPECT_DOUBLE_EQ(s.weight, 10);
  EXPECT_THROW(RolloutState::from_json(json::parse(R"({"phase":"idle","primary":1,"canary":0,
      "weight":140,"failed_checks":0,"rolled_back":[]})")),
               InputError);
  const RolloutState round = RolloutState::from_json(s.to_json());
  EXPECT_EQ(round.primary, 1);
  EXPECT_EQ(round.canary, 2);
  EXPECT_EQ(round.phase, RolloutState::Phase::progressing);
}

TEST_F(ReleaseRollout, PromoteByHandSetsThePrimary) {
  auto c = controller();
  c->tick(snapshot_, at(0));
  const RolloutState s = c->promote(*model_, 2);
  EXPECT_EQ(s.primary, 2);
  EXPECT_TRUE(s.manual);
  EXPECT_EQ(s.phase, RolloutState::Phase::promoted);
  EXPECT_EQ(s.canary, 0);
  EXPECT_DOUBLE_EQ(s.weight, 0);
  EXPECT_EQ(c->weights(*model_), (Weights{{2, 100}}));
  EXPECT_THROW(c->promote(*model_, 5), InputError);
  EXPECT_EQ(decisions().back(), "manual_promote");
  EXPECT_EQ(decision_lines().back()["previous_primary"], 1);
  std::ifstream state_file(fs::path(dir_.path()) / "m.rollout.json");
  ASSERT_TRUE(state_file);
  const json saved = json::parse(state_file);
  EXPECT_EQ(saved["manual"], true);
  EXPECT_EQ(saved["primary"], 2);
  c->tick(snapshot_, at(1));
  EXPECT_EQ(state_of(*c).primary, 2);
}

// ---- config.ini: the new keys, and Triton's configuration -------------------------------------

void expect_model_error(const std::string& text, const std::vector<std::string>& words) {
  try {
    parse_model_options(text, "repo/m/config.ini");
    ADD_FAILURE() << "accepted: " << text;
  } catch (const InputError& e) {
    for (const auto& w : words)
      EXPECT_TRUE(contains(e.what(), w)) << "'" << e.what() << "' lacks '" << w << "'";
  }
}

TEST(ReleaseModelOptions, DefaultsOfTheNewKeys) {
  const ModelOptions d = parse_model_options("", "m");
  EXPECT_EQ(d.timeout_ms, 0);
  EXPECT_TRUE(d.fallback_model.empty());
  EXPECT_EQ(d.fallback_version, 0);
  EXPECT_EQ(d.priority_levels, 1);
  EXPECT_EQ(d.default_priority, 0);
  EXPECT_EQ(d.sticky_header, "X-Tern-Route-Key");
  EXPECT_FALSE(d.breaker.enabled);
  EXPECT_FALSE(d.shadow.active());
  EXPECT_FALSE(d.rollout.enabled);
  EXPECT_TRUE(d.fault.control.empty());
  EXPECT_EQ(d.priority_of(0), 1);
  EXPECT_EQ(d.priority_of(5), 1);
}

TEST(ReleaseModelOptions, EveryNewKeyParses) {
  const ModelOptions o = parse_model_options(
      "version_policy = all\n"
      "timeout_ms = 250\n"
      "fallback = quick:3\n"
      "priority_levels = 3\n"
      "default_priority = 2\n"
      "sticky_header = X-User\n"
      "[breaker]\nenabled = true\nwindow = 8\nmin_calls = 4\nfailure_rate = 25\n"
      "slow_call_ms = 300\nslow_call_rate = 75\nopen_seconds = 2.5\nhalf_open_calls = 2\n"
      "[rollout]\nenabled = true\nstep_weight = 5\nmax_weight = 40\ninterval_seconds = 30\n"
      "threshold = 3\nmin_success_rate = 95\nmax_p99_ms = 250\nmin_accuracy = 0.8\n"
      "min_agreement = 0.9\nmin_requests = 20\nmirror = true\n"
      "[fault]\ncontrol = /tmp/faults/{version}\n",
      "m");
  EXPECT_DOUBLE_EQ(o.timeout_ms, 250);
  EXPECT_EQ(o.fallback_model, "quick");
  EXPECT_EQ(o.fallback_version, 3);
  EXPECT_EQ(o.priority_levels, 3);
  EXPECT_EQ(o.default_priority, 2);
  EXPECT_EQ(o.priority_of(0), 2);  // the default level
  EXPECT_EQ(o.priority_of(1), 1);
  EXPECT_EQ(o.priority_of(7), 3);  // clamped to the lowest
  EXPECT_EQ(o.sticky_header, "X-User");
  const BreakerOptions& b = o.breaker;
  EXPECT_TRUE(b.enabled);
  EXPECT_EQ(b.window, 8);
  EXPECT_EQ(b.min_calls, 4);
  EXPECT_DOUBLE_EQ(b.failure_rate, 25);
  EXPECT_DOUBLE_EQ(b.slow_call_ms, 300);
  EXPECT_DOUBLE_EQ(b.slow_call_rate, 75);
  EXPECT_DOUBLE_EQ(b.open_seconds, 2.5);
  EXPECT_EQ(b.half_open_calls, 2);
  EXPECT_FALSE(o.shadow.active());
  const RolloutOptions& r = o.rollout;
  EXPECT_TRUE(r.enabled);
  EXPECT_DOUBLE_EQ(r.step_weight, 5);
  EXPECT_DOUBLE_EQ(r.max_weight, 40);
  EXPECT_DOUBLE_EQ(r.interval_seconds, 30);
  EXPECT_EQ(r.threshold, 3);
  EXPECT_DOUBLE_EQ(r.min_success_rate, 95);
  EXPECT_DOUBLE_EQ(r.max_p99_ms, 250);
  EXPECT_DOUBLE_EQ(r.min_accuracy, 0.8);
  EXPECT_DOUBLE_EQ(r.min_agreement, 0.9);
  EXPECT_EQ(r.min_requests, 20);
  EXPECT_TRUE(r.mirror);
  EXPECT_EQ(o.fault.control, "/tmp/faults/{version}");

  // The shadow's keys, apart: [shadow] and rollout.mirror exclude each other.
  const ModelOptions shadowed =
      parse_model_options("[shadow]\nmodel = challenger\nversion = 4\nfraction = 0.5\n", "m");
  EXPECT_EQ(shadowed.shadow.model, "challenger");
  EXPECT_EQ(shadowed.shadow.version, 4);
  EXPECT_DOUBLE_EQ(shadowed.shadow.fraction, 0.5);
  EXPECT_TRUE(shadowed.shadow.active());
  EXPECT_THROW(parse_model_options("version_policy = all\n[shadow]\nversion = 3\n[rollout]\n"
                                   "enabled = true\nmirror = true\n",
                                   "m"),
               InputError);
  const ModelOptions plain = parse_model_options("fallback = quick\n", "m");
  EXPECT_EQ(plain.fallback_model, "quick");
  EXPECT_EQ(plain.fallback_version, 0);
  EXPECT_TRUE(parse_model_options("version_policy = latest:2\n[rollout]\nenabled = true\n", "m")
                  .rollout.enabled);
}

TEST(ReleaseModelOptions, BadValuesNameTheirKey) {
  expect_model_error("timeout_ms = -1", {"repo/m/config.ini", "timeout_ms"});
  expect_model_error("timeout_ms = inf", {"timeout_ms"});
  expect_model_error("timeout_ms = 4000000", {"timeout_ms"});
  expect_model_error("fallback = :3", {"fallback", "MODEL:VERSION"});
  expect_model_error("fallback = quick:0", {"fallback"});
  expect_model_error("fallback = quick:x", {"fallback"});
  expect_model_error("priority_levels = 0", {"priority_levels"});
  expect_model_error("priority_levels = 17", {"priority_levels"});
  expect_model_error("priority_levels = 2\ndefault_priority = 3", {"default_priority"});
  expect_model_error("default_priority = -1", {"default_priority"});
  expect_model_error("sticky_header = X Key", {"sticky_header"});
  expect_model_error("sticky_header = X:Key", {"sticky_header"});
  expect_model_error("[breaker]\nenabled = maybe", {"breaker.enabled"});
  expect_model_error("[breaker]\nfailure_rate = 0", {"breaker.failure_rate"});
  expect_model_error("[breaker]\nfailure_rate = 101", {"breaker.failure_rate"});
  expect_model_error("[breaker]\nwindow = 0", {"breaker.window"});
  expect_model_error("[breaker]\nmin_calls = 30", {"breaker.min_calls"});  // window 20
  expect_model_error("[breaker]\nslow_call_ms = 0", {"breaker.slow_call_ms"});
  expect_model_error("[breaker]\nslow_call_rate = 0", {"breaker.slow_call_rate"});
  expect_model_error("[breaker]\nopen_seconds = 0", {"breaker.open_seconds"});
  expect_model_error("[breaker]\nhalf_open_calls = 0", {"breaker.half_open_calls"});
  expect_model_error("[breaker]\nbogus = 1", {"unknown key 'breaker.bogus'"});
  expect_model_error("[shadow]\nfraction = 0", {"shadow.fraction"});
  expect_model_error("[shadow]\nversion = -1", {"shadow.version"});
  expect_model_error("[rollout]\nstep_weight = 0", {"rollout.step_weight"});
  expect_model_error("[rollout]\nmax_weight = 5", {"rollout.max_weight"});  // under step_weight
  expect_model_error("[rollout]\nmax_weight = 101", {"rollout.max_weight"});
  expect_model_error("[rollout]\ninterval_seconds = 0.01", {"rollout.interval_seconds"});
  expect_model_error("[rollout]\nthreshold = 0", {"rollout.threshold"});
  expect_model_error("[rollout]\nmin_success_rate = 120", {"rollout.min_success_rate"});
  expect_model_error("[rollout]\nmax_p99_ms = 0", {"rollout.max_p99_ms"});
  expect_model_error("[rollout]\nmin_accuracy = 2", {"rollout.min_accuracy"});
  expect_model_error("[rollout]\nmin_requests = 0", {"rollout.min_requests"});
  expect_model_error("[rollout]\nmin_agreement = 0.5", {"rollout.min_agreement", "mirror"});
  expect_model_error("[fault]\nfile = x", {"unknown key 'fault.file'"});
}

TEST(ReleaseModelOptions, RolloutExcludesTrafficAndNeedsTwoVersions) {
  expect_model_error("version_policy = all\ntraffic = 1:50,2:50\n[rollout]\nenabled = true\n",
                     {"traffic", "rollout.enabled"});
  expect_model_error("[rollout]\nenabled = true\n", {"rollout.enabled", "latest:2"});
  expect_model_error("version_policy = latest:1\n[rollout]\nenabled = true\n", {"rollout.enabled"});
  // Disabled, the rollout's keys do not conflict with traffic.
  EXPECT_FALSE(parse_model_options("traffic = 1:50,2:50\n[rollout]\nenabled = false\n", "m")
                   .rollout.enabled);
}

TEST(ReleaseModelOptions, TritonConfigurationAsJson) {
  const ModelOptions o = parse_triton_config(
      R"({"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 100},
          "parameters": {"timeout_ms": {"string_value": "50"}}})",
      "load request");
  EXPECT_EQ(o.max_batch_size, 8);
  EXPECT_EQ(o.max_queue_delay_us, 100);
  EXPECT_DOUBLE_EQ(o.timeout_ms, 50);

  const ModelOptions full = parse_triton_config(
      R"({"name": "m", "platform": "tern", "version_policy": {"latest": {"num_versions": 2}},
          "dynamic_batching": {"priority_levels": 3, "default_priority_level": 2,
                               "default_queue_policy": {"max_queue_size": 16}},
          "instance_group": [{"count": 3, "kind": "KIND_CPU"}],
          "response_cache": {"enable": true},
          "parameters": {"breaker.enabled": {"string_value": "true"},
                         "fallback": {"string_value": "quick:2"}}})",
      "load request");
  EXPECT_EQ(full.policy.kind, VersionPolicy::Kind::latest);
  EXPECT_EQ(full.policy.latest, 2);
  EXPECT_EQ(full.priority_levels, 3);
  EXPECT_EQ(full.default_priority, 2);
  EXPECT_EQ(full.max_queue_size, 16);
  EXPECT_EQ(full.instances, 3);
  EXPECT_TRUE(full.cache);
  EXPECT_TRUE(full.breaker.enabled);
  EXPECT_EQ(full.fallback_model, "quick");
  EXPECT_EQ(full.fallback_version, 2);
  const ModelOptions specific = parse_triton_config(
      R"({"version_policy": {"specific": {"versions": [1, 3]}}})", "load request");
  EXPECT_EQ(specific.policy.versions, (std::vector<int64_t>{1, 3}));

  auto expect_error = [](const std::string& text, const std::string& word) {
    try {
      parse_triton_config(text, "load request for 'm'");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InputError& e) {
      EXPECT_TRUE(contains(e.what(), word)) << "'" << e.what() << "' lacks '" << word << "'";
      EXPECT_TRUE(contains(e.what(), "load request for 'm'")) << e.what();
    }
  };
  expect_error(R"({"optimization": {"priority": "PRIORITY_MAX"}})", "'optimization'");
  expect_error(R"({"max_batch_size": "8"})", "'max_batch_size' must be an integer");
  expect_error(R"([1, 2])", "JSON object");
  expect_error(R"({"max_batch_size": 8)", "JSON object");
  expect_error(R"({"parameters": {"timeout_ms": 50}})", "string_value");
  expect_error(R"({"parameters": {"timeout_ms": {"string_value": "-5"}}})", "timeout_ms");
  expect_error(R"({"parameters": {"nonsense": {"string_value": "1"}}})", "unknown key 'nonsense'");
}

// ---- the fault control file and the shadow comparison ----------------------------------------

TEST(ReleaseFaults, TheControlFileIsReadWhenItChanges) {
  tern::testing::TempDir dir("tern-release-faults");
  const std::string path = dir.path() + "/control";
  FaultControl missing(path);
  EXPECT_EQ(missing.current().fail, 0);
  dir.write("control", "fail = 0.5\nsleep_ms = 3\nnan = 1\nbogus = 2\nno equals sign\nfail2 = x\n");
  FaultControl control(path);
  FaultControl::Commands c = control.current();
  EXPECT_DOUBLE_EQ(c.fail, 0.5);
  EXPECT_DOUBLE_EQ(c.sleep_ms, 3);
  EXPECT_DOUBLE_EQ(c.nan, 1);
  dir.write("control", "nan = 0\n");
  c = control.current();
  EXPECT_EQ(c.fail, 0);
  EXPECT_EQ(c.nan, 0);

  auto ones = [](const InputRows&, int64_t rows, float* out) {
    std::fill(out, out + rows * 2, 1.0f);
  };
  auto faulty = with_faults(ones, std::make_shared<FaultControl>(path), 2);
  std::vector<float> out(2);
  faulty(InputRows{{0}, {}}, 1, out.data());
  EXPECT_EQ(out, (std::vector<float>{1, 1}));
  // Each command file of another size: a rewrite within one tick of the file system's clock
  // would keep the same mtime.
  dir.write("control", "nan = 1.0\n");
  faulty(InputRows{{0}, {}}, 1, out.data());
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1]));
  dir.write("control", "fail = 1\n");
  EXPECT_THROW(faulty(InputRows{{0}, {}}, 1, out.data()), std::runtime_error);
}

TEST(ReleaseShadow, ComparesArgMaxAndMeanDifference) {
  ShadowRegistry registry;
  auto s = registry.get("m", "m", 2);
  EXPECT_EQ(registry.get("m", "m", 2), s);
  EXPECT_EQ(registry.find("m", "m", 3), nullptr);
  const float primary[] = {1, 0, 0, 1};
  const float challenger[] = {1, 0, 1, 0};
  s->compare(primary, challenger, 2, 2);
  EXPECT_EQ(s->totals().compared, 2u);
  EXPECT_EQ(s->totals().agreed, 1u);
  EXPECT_DOUBLE_EQ(s->mean_abs_diff(), 0.5);  // rows differ by 0 and by 1 on average
  std::string text;
  registry.render(text);
  EXPECT_TRUE(contains(
      text,
      "tern_shadow_rows_agreed_total{model=\"m\",challenger=\"m\",challenger_version=\"2\"} 1"))
      << text;
}

// ---- the router: the control API, deadlines, fallbacks, breakers -------------------------------

constexpr const char* kToken = "0123456789abcdef-token";
const std::string kRow =
    R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[1,2]}]})";

class ReleaseRouterTest : public ::testing::Test {
 protected:
  ~ReleaseRouterTest() override {
    // The workers first: a late answer calls into the router.
    if (repo_) repo_->stop();
    router_.reset();
    repo_.reset();
  }
  void write(const std::string& key, const std::string& text) { dir_.write(key, text); }
  // A control file under its own folder (outside the repository); its path.
  std::string fault_file(const std::string& name, const std::string& text) {
    faults_.write(name, text);
    return faults_.path() + "/" + name;
  }
  void start(ControlMode mode, const std::string& token) {
    repo_ = std::make_unique<ModelRepository>(RepositoryOptions{root_, 2, 1, mode, {}}, stats_,
                                              fake_loader);
    repo_->poll(true);
    ReleaseOptions release;
    release.admin_token = token;
    release.rollout_tick_seconds = 0;
    router_ = std::make_unique<Router>(
        *repo_, stats_, counters_, nullptr, [] { return true; },
        [](std::function<void()> fn) { fn(); }, release);
  }
  HttpResponse call(const std::string& method, const std::string& target,
                    const std::string& body = "",
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
    std::promise<HttpResponse> response;
    HttpRequest request{method, target, std::move(headers), body, Clock::now()};
    router_->handle(std::move(request),
                    [&](HttpResponse&& r) { response.set_value(std::move(r)); });
    HttpResponse r = response.get_future().get();
    bodies_.push_back(r.body);
    for (const auto& [name, value] : r.headers) bodies_.push_back(value);
    return r;
  }
  HttpResponse admin(const std::string& target, const std::string& body = "") {
    return call("POST", target, body, {{"Authorization", std::string("Bearer ") + kToken}});
  }
  static std::optional<std::string> header(const HttpResponse& r, const std::string& name) {
    for (const auto& [n, v] : r.headers)
      if (n == name) return v;
    return std::nullopt;
  }
  static std::string error_of(const HttpResponse& r) {
    const json j = json::parse(r.body, nullptr, false);
    return j.is_object() ? j.value("error", std::string()) : std::string();
  }
  std::string metrics() { return call("GET", "/metrics").body; }

  tern::testing::TempDir dir_{"tern-release-repo"};
  tern::testing::TempDir faults_{"tern-release-faults"};
  const std::string root_ = dir_.path();
  StatsRegistry stats_;
  ServerCounters counters_;
  std::unique_ptr<ModelRepository> repo_;
  std::unique_ptr<Router> router_;
  std::vector<std::string> bodies_;  // every response body and header value seen
};

TEST_F(ReleaseRouterTest, ControlApiNeedsTheBearerTokenAndLoadsAndUnloads) {
  write("m/1/model.h5", "2 3 10");
  write("m/2/model.h5", "2 3 20");
  start(ControlMode::explicit_, kToken);

  auto no_auth = call("POST", "/v2/repository/index");
  EXPECT_EQ(no_auth.status, 401);
  ASSERT_TRUE(header(no_auth, "WWW-Authenticate").has_value());
  EXPECT_TRUE(contains(*header(no_auth, "WWW-Authenticate"), "Bearer"));
  EXPECT_EQ(call("POST", "/v2/repository/index", "", {{"Authorization", "Bearer wrong"}}).status,
            403);
  EXPECT_EQ(
      call("POST", "/v2/repository/index", "", {{"Authorization", std::string("Basic ") + kToken}})
          .status,
      403);
  EXPECT_EQ(call("POST", "/v2/repository/index", "",
                 {{"Authorization", std::string("Bearer ") + kToken + "x"}})
                .status,
            403);
  EXPECT_EQ(call("POST", "/v2/repository/index", "",
                 {{"Authorization", std::string("Bearer ") + std::string(kToken).substr(0, 10)}})
                .status,
            403);
  EXPECT_FALSE(header(call("POST", "/v2/repository/index", "", {{"Authorization", "Bearer wrong"}}),
                      "WWW-Authenticate")
                   .has_value());

  auto index = admin("/v2/repository/index");
  ASSERT_EQ(index.status, 200) << index.body;
  const json entries = json::parse(index.body);
  ASSERT_EQ(entries.size(), 2u) << index.body;
  for (const auto& e : entries) {
    EXPECT_EQ(e["name"], "m");
    EXPECT_EQ(e["state"], "UNAVAILABLE");
    EXPECT_EQ(e["reason"], "unloaded");
  }
  EXPECT_EQ(json::parse(admin("/v2/repository/index", R"({"ready": true})").body).size(), 0u);
  const int before = call("POST", "/v2/models/m/infer", kRow).status;
  EXPECT_TRUE(before == 503 || before == 404) << before;

  EXPECT_EQ(call("POST", "/v2/repository/models/m/load").status, 401);
  auto load = admin("/v2/repository/models/m/load");
  ASSERT_EQ(load.status, 200) << load.body;
  auto ok = call("POST", "/v2/models/m/infer", kRow);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(json::parse(ok.body)["model_version"], "2");  // latest:1
  EXPECT_EQ(json::parse(ok.body)["outputs"][0]["data"], json({23, 24, 25}));
  const json ready = json::parse(admin("/v2/repository/index", R"({"ready": true})").body);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0]["version"], "2");

  // Only the version asked for, then back to config.ini's policy with a load without one.
  ASSERT_EQ(admin("/v2/repository/models/m/load", R"({"parameters": {"version": "1"}})").status,
            200);
  ok = call("POST", "/v2/models/m/infer", kRow);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(json::parse(ok.body)["outputs"][0]["data"], json({13, 14, 15}));
  EXPECT_EQ(admin("/v2/repository/models/m/load", R"({"parameters": {"version": 7}})").status, 400);
  ASSERT_EQ(admin("/v2/repository/models/m/load").status, 200);
  EXPECT_EQ(json::parse(call("POST", "/v2/models/m/infer", kRow).body)["model_version"], "2");

  // A config in the request: config.ini text, or Triton's JSON.
  auto with_config =
      admin("/v2/repository/models/m/load", R"({"parameters": {"config": "max_batch_size = 4"}})");
  ASSERT_EQ(with_config.status, 200) << with_config.body;
  EXPECT_EQ(json::parse(call("GET", "/v2/models/m/config").body)["max_batch_size"], 4);
  const std::string triton = json{{"parameters", {{"config", R"({"max_batch_size": 2})"}}}}.dump();
  ASSERT_EQ(admin("/v2/repository/models/m/load", triton).status, 200);
  EXPECT_EQ(json::parse(call("GET", "/v2/models/m/config").body)["max_batch_size"], 2);
  auto bad_config =
      admin("/v2/repository/models/m/load", R"({"parameters": {"config": "max_batch_size = 0"}})");
  EXPECT_EQ(bad_config.status, 400);
  EXPECT_TRUE(contains(error_of(bad_config), "max_batch_size")) << bad_config.body;
  EXPECT_EQ(json::parse(call("GET", "/v2/models/m/config").body)["max_batch_size"], 2);  // kept
  auto bad_param = admin("/v2/repository/models/m/load", R"({"parameters": {"colour": "red"}})");
  EXPECT_EQ(bad_param.status, 400);
  EXPECT_TRUE(contains(error_of(bad_param), "colour"));

  auto unknown = admin("/v2/repository/models/nosuch/load");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_TRUE(contains(error_of(unknown), "'nosuch'")) << unknown.body;

  EXPECT_EQ(call("POST", "/v2/repository/models/m/unload").status, 401);
  ASSERT_EQ(admin("/v2/repository/models/m/unload").status, 200);
  const int after = call("POST", "/v2/models/m/infer", kRow).status;
  EXPECT_TRUE(after == 503 || after == 404) << after;
  for (const auto& e : json::parse(admin("/v2/repository/index").body))
    EXPECT_EQ(e["reason"], "unloaded");
  auto again = admin("/v2/repository/models/m/unload");
  EXPECT_EQ(again.status, 400);
  EXPECT_TRUE(contains(error_of(again), "not loaded"));
  // And it loads again.
  ASSERT_EQ(admin("/v2/repository/models/m/load").status, 200);
  EXPECT_EQ(call("POST", "/v2/models/m/infer", kRow).status, 200);

  for (const auto& text : bodies_) EXPECT_FALSE(contains(text, kToken)) << text;
}

TEST_F(ReleaseRouterTest, LoadIsRefusedOutsideExplicitModeAndWithoutAToken) {
  write("m/1/model.h5", "2 3 10");
  start(ControlMode::poll, kToken);
  auto load = admin("/v2/repository/models/m/load");
  EXPECT_EQ(load.status, 400);
  EXPECT_TRUE(contains(error_of(load), "poll")) << load.body;
  EXPECT_EQ(admin("/v2/repository/models/m/unload").status, 400);
  EXPECT_EQ(call("POST", "/v2/models/m/infer", kRow).status, 200);  // still served
  const json index = json::parse(admin("/v2/repository/index").body);
  ASSERT_EQ(index.size(), 1u);
  EXPECT_EQ(index[0]["state"], "READY");
  for (const auto& text : bodies_) EXPECT_FALSE(contains(text, kToken)) << text;

  repo_->stop();
  router_.reset();
  repo_.reset();
  start(ControlMode::explicit_, "");  // no token: the control API is off
  auto off = call("POST", "/v2/repository/models/m/load", "",
                  {{"Authorization", std::string("Bearer ") + kToken}});
  EXPECT_EQ(off.status, 403);
  EXPECT_TRUE(contains(error_of(off), "admin-token")) << off.body;
}

TEST_F(ReleaseRouterTest, PromoteRoutesTheModelsRequestsToTheVersion) {
  write("m/1/model.h5", "2 3 10");
  write("m/2/model.h5", "2 3 20");
  write("m/config.ini", "version_policy = all\n");
  start(ControlMode::poll, kToken);
  EXPECT_EQ(json::parse(call("POST", "/v2/models/m/infer", kRow).body)["model_version"], "2");
  EXPECT_EQ(call("POST", "/v2/repository/models/m/promote", R"({"version": "1"})").status, 401);
  auto promoted = admin("/v2/repository/models/m/promote", R"({"version": "1"})");
  ASSERT_EQ(promoted.status, 200) << promoted.body;
  const json state = json::parse(promoted.body)["state"];
  EXPECT_EQ(state["primary"], 1);
  EXPECT_EQ(state["manual"], true);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(json::parse(call("POST", "/v2/models/m/infer", kRow).body)["model_version"], "1");
  EXPECT_EQ(admin("/v2/repository/models/m/promote", R"({"version": 9})").status, 400);
  EXPECT_EQ(admin("/v2/repository/models/m/promote", "{}").status, 400);
  const json rollout = json::parse(call("GET", "/v2/models/m/rollout").body);
  EXPECT_EQ(rollout["model_name"], "m");
  EXPECT_EQ(rollout["rollout_enabled"], false);
  EXPECT_DOUBLE_EQ(rollout["weights"]["1"].get<double>(), 100);
}

TEST_F(ReleaseRouterTest, RolloutWeightsAndStickyKeys) {
  write("r/1/model.h5", "2 3 0");
  write("r/2/model.h5", "2 3 1000");
  write("r/config.ini",
        "version_policy = all\n[rollout]\nenabled = true\nstep_weight = 50\nmax_weight = 50\n");
  start(ControlMode::poll, "");
  // The first look at the model takes the rollout's first step: no request is routed before it.
  json rollout = json::parse(call("GET", "/v2/models/r/rollout").body);
  EXPECT_EQ(rollout["rollout_enabled"], true);
  EXPECT_EQ(rollout["state"]["phase"], "progressing");
  EXPECT_EQ(rollout["state"]["canary"], 2);
  EXPECT_DOUBLE_EQ(rollout["weights"]["1"].get<double>(), 50);
  EXPECT_DOUBLE_EQ(rollout["weights"]["2"].get<double>(), 50);

  auto version_for = [&](const std::string& key) {
    auto r = call("POST", "/v2/models/r/infer", kRow, {{"x-tern-route-key", key}});
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body)["model_version"].get<std::string>();
  };
  const std::string alice = version_for("alice");
  for (int i = 0; i < 10; ++i) EXPECT_EQ(version_for("alice"), alice);
  std::set<std::string> seen;
  for (int i = 0; i < 40; ++i) seen.insert(version_for("user-" + std::to_string(i)));
  EXPECT_EQ(seen, (std::set<std::string>{"1", "2"}));
  EXPECT_TRUE(contains(metrics(), "tern_rollout_state{model=\"r\"} 1\n"));
}

TEST_F(ReleaseRouterTest, DeadlinesGoToTheFallbackOrAnswer504) {
  const std::string sleeping = fault_file("sleep", "sleep_ms = 400\n");
  write("quick/1/model.h5", "2 3 100");
  write("slow/1/model.h5", "2 3 0");
  write("slow/config.ini",
        "timeout_ms = 100\nfallback = quick\n[fault]\ncontrol = " + sleeping + "\n");
  write("hang/1/model.h5", "2 3 0");
  write("hang/config.ini", "timeout_ms = 100\n[fault]\ncontrol = " + sleeping + "\n");
  write("sleepy/1/model.h5", "2 3 0");
  write("sleepy/config.ini", "[fault]\ncontrol = " + sleeping + "\n");
  start(ControlMode::poll, "");

  auto t = Clock::now();
  auto fb = call("POST", "/v2/models/slow/infer", kRow);
  auto took = Clock::now() - t;
  ASSERT_EQ(fb.status, 200) << fb.body;
  EXPECT_LT(took, 350ms);
  EXPECT_GE(took, 90ms);  // the primary had its 100 ms
  const json answer = json::parse(fb.body);
  EXPECT_EQ(answer["model_name"], "quick");
  EXPECT_EQ(answer["outputs"][0]["data"], json({103, 104, 105}));
  EXPECT_EQ(header(fb, "X-Tern-Fallback"), std::optional<std::string>("deadline"));
  EXPECT_EQ(header(fb, "X-Tern-Fallback-For"), std::optional<std::string>("slow:1"));

  t = Clock::now();
  auto late = call("POST", "/v2/models/hang/infer", kRow);
  took = Clock::now() - t;
  EXPECT_EQ(late.status, 504) << late.body;
  EXPECT_TRUE(contains(error_of(late), "deadline")) << late.body;
  EXPECT_LT(took, 350ms);

  // The request's own timeout (microseconds), on a model with no limit of its own.
  t = Clock::now();
  auto own = call(
      "POST", "/v2/models/sleepy/infer",
      R"({"parameters":{"timeout":50000},"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[1,2]}]})");
  took = Clock::now() - t;
  EXPECT_EQ(own.status, 504) << own.body;
  EXPECT_TRUE(contains(error_of(own), "deadline")) << own.body;
  EXPECT_LT(took, 300ms);

  const std::string text = metrics();
  EXPECT_TRUE(
      contains(text, "tern_fallback_total{model=\"slow\",version=\"1\",reason=\"deadline\"} 1\n"))
      << text;
  EXPECT_TRUE(contains(
      text, "tern_deadline_exceeded_total{model=\"sleepy\",version=\"1\",where=\"in_flight\"} 1\n"))
      << text;
  EXPECT_TRUE(contains(
      text, "tern_deadline_exceeded_total{model=\"hang\",version=\"1\",where=\"in_flight\"} 1\n"))
      << text;
}

TEST_F(ReleaseRouterTest, TheBreakerOpensOnFailuresAndATrialCallClosesIt) {
  const std::string control = fault_file("fail", "fail = 1\n");
  const std::string breaker =
      "[breaker]\nenabled = true\nwindow = 4\nmin_calls = 4\nfailure_rate = 50\n"
      "open_seconds = 1\nhalf_open_calls = 1\n[fault]\ncontrol = " +
      control + "\n";
  write("quick/1/model.h5", "2 3 100");
  write("brk/1/model.h5", "2 3 0");
  write("brk/config.ini", breaker);
  write("brkfb/1/model.h5", "2 3 0");
  write("brkfb/config.ini", "fallback = quick\n" + breaker);
  start(ControlMode::poll, "");

  for (int i = 0; i < 4; ++i) {
    auto r = call("POST", "/v2/models/brk/infer", kRow);
    EXPECT_EQ(r.status, 500) << r.body;
    EXPECT_TRUE(contains(error_of(r), "fault injected")) << r.body;
    auto f = call("POST", "/v2/models/brkfb/infer", kRow);
    ASSERT_EQ(f.status, 200) << f.body;
    EXPECT_EQ(json::parse(f.body)["model_name"], "quick");
    EXPECT_EQ(header(f, "X-Tern-Fallback"), std::optional<std::string>("error"));
  }
  std::string text = metrics();
  EXPECT_TRUE(contains(text, "tern_breaker_state{model=\"brk\",version=\"1\"} 1\n")) << text;
  EXPECT_TRUE(contains(text, "tern_breaker_state{model=\"brkfb\",version=\"1\"} 1\n")) << text;

  auto refused = call("POST", "/v2/models/brk/infer", kRow);
  EXPECT_EQ(refused.status, 503);
  EXPECT_TRUE(contains(error_of(refused), "circuit breaker")) << refused.body;
  EXPECT_EQ(header(refused, "Retry-After"), std::optional<std::string>("1"));
  auto instead = call("POST", "/v2/models/brkfb/infer", kRow);
  ASSERT_EQ(instead.status, 200) << instead.body;
  EXPECT_EQ(json::parse(instead.body)["model_name"], "quick");
  EXPECT_EQ(header(instead, "X-Tern-Fallback"), std::optional<std::string>("breaker"));
  text = metrics();
  EXPECT_TRUE(contains(text, "tern_breaker_rejected_total{model=\"brk\",version=\"1\"} 1\n"))
      << text;
  EXPECT_TRUE(
      contains(text, "tern_fallback_total{model=\"brkfb\",version=\"1\",reason=\"breaker\"} 1\n"))
      << text;

  fault_file("fail", "sleep_ms = 0\nfail = 0\n");  // healed (another size: surely noticed)
  std::this_thread::sleep_for(1100ms);
  EXPECT_TRUE(contains(metrics(), "tern_breaker_state{model=\"brk\",version=\"1\"} 2\n"));
  auto trial = call("POST", "/v2/models/brk/infer", kRow);
  ASSERT_EQ(trial.status, 200) << trial.body;
  EXPECT_EQ(json::parse(trial.body)["model_name"], "brk");
  auto own = call("POST", "/v2/models/brkfb/infer", kRow);
  ASSERT_EQ(own.status, 200) << own.body;
  EXPECT_EQ(json::parse(own.body)["model_name"], "brkfb");
  EXPECT_FALSE(header(own, "X-Tern-Fallback").has_value());
  text = metrics();
  EXPECT_TRUE(contains(text, "tern_breaker_state{model=\"brk\",version=\"1\"} 0\n")) << text;
  EXPECT_TRUE(contains(text, "tern_breaker_state{model=\"brkfb\",version=\"1\"} 0\n")) << text;
}

TEST_F(ReleaseRouterTest, NonFiniteAnswersAreServerErrors) {
  const std::string nans = fault_file("nan", "nan = 1\n");
  write("quick/1/model.h5", "2 3 100");
  write("nanm/1/model.h5", "2 3 0");
  write("nanm/config.ini", "[fault]\ncontrol = " + nans + "\n");
  write("nanfb/1/model.h5", "2 3 0");
  write("nanfb/config.ini", "fallback = quick:1\n[fault]\ncontrol = " + nans + "\n");
  start(ControlMode::poll, "");
  auto r = call("POST", "/v2/models/nanm/infer", kRow);
  EXPECT_EQ(r.status, 500) << r.body;
  EXPECT_TRUE(contains(error_of(r), "non-finite")) << r.body;
  auto f = call("POST", "/v2/models/nanfb/infer", kRow);
  ASSERT_EQ(f.status, 200) << f.body;
  EXPECT_EQ(json::parse(f.body)["model_name"], "quick");
  EXPECT_EQ(header(f, "X-Tern-Fallback"), std::optional<std::string>("error"));
  EXPECT_EQ(stats_.get("nanm", 1)->server_failures.load(), 1u);
}

}  // namespace
}  // namespace tern::serve
