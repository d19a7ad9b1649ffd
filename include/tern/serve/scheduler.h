#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tern/base/clock.h"
#include "tern/serve/input_rows.h"
#include "tern/serve/metrics.h"

// Dynamic batching for one model version (Triton's dynamic batcher): requests queue, and a
// free worker takes as many as fit in max_batch_size rows, waiting at most
// max_queue_delay_microseconds after the oldest one arrived for more to come. Each worker owns
// its own copy of the model, so workers never share activation buffers.
namespace tern::serve {

struct JobResult {
  std::vector<float> output;  // rows x output_features
  std::string error;          // empty on success
  bool expired = false;       // its deadline passed while it waited: it never ran
  uint64_t queue_ns = 0, input_ns = 0, infer_ns = 0, output_ns = 0;
  InputRows input;  // the job's rows, handed back for monitoring after the answer
};

// One request waiting for the model.
struct Job {
  InputRows input;  // rows x input_features (or x context, for token models)
  int64_t rows = 0;
  Clock::time_point enqueued = Clock::now();
  // Past it, a job still waiting is answered expired instead of run.
  Clock::time_point deadline = Clock::time_point::max();
  int64_t priority = 1;  // 1 (served first) to BatcherOptions::priority_levels
  // Called once, on a worker thread; keep it short (post heavy work elsewhere).
  std::function<void(JobResult&&)> done;
};

// out[rows x output_features] = model(rows of x); one per worker, not shared.
using PredictFn = std::function<void(const InputRows& x, int64_t rows, float* out)>;

struct BatcherOptions {
  int64_t max_batch_size = 64;     // rows per batch
  int64_t max_queue_delay_us = 0;  // 0: batch only what is already waiting
  int64_t max_queue_size = 1024;   // requests waiting at most; 0 = unbounded
  // Level p may queue while fewer than max_queue_size * (levels - p + 1) / levels wait.
  int64_t priority_levels = 1;
};

enum class SubmitResult { queued, full, stopped };

class Batcher {
 public:
  // One worker thread per instance.
  Batcher(std::vector<PredictFn> instances, int64_t input_features, int64_t output_features,
          BatcherOptions options, std::shared_ptr<VersionStats> stats);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues the job; if the queue is full for its priority or the batcher stopped, the job is left
  // as it was.
  SubmitResult submit(Job&& job);
  // The queue limit for a priority level (0: unbounded).
  int64_t limit_for(int64_t priority) const;
  // Runs every queued job, then joins the workers. Idempotent.
  void stop();
  size_t queued() const;

 private:
  void work(size_t instance);
  void run_batch(size_t instance, std::vector<Job>& batch, InputRows& in, std::vector<float>& out);
  // Moves the jobs whose deadline passed out of the queues (mu_ held).
  void take_expired(Clock::time_point now, std::vector<Job>& expired);
  std::deque<Job>* front_queue();  // the highest-priority non-empty queue; mu_ held

  std::vector<PredictFn> instances_;
  const int64_t input_features_, output_features_;
  const BatcherOptions options_;
  std::shared_ptr<VersionStats> stats_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::deque<Job>> queues_;  // one per priority level, level 1 first
  size_t queued_ = 0;
  int64_t queued_rows_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace tern::serve
