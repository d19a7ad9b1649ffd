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
  uint64_t queue_ns = 0, input_ns = 0, infer_ns = 0, output_ns = 0;
  InputRows input;  // the job's rows, handed back for monitoring after the answer
};

// One request waiting for the model.
struct Job {
  InputRows input;  // rows x input_features (or x context, for token models)
  int64_t rows = 0;
  Clock::time_point enqueued = Clock::now();
  // Called once, on a worker thread; keep it short (post heavy work elsewhere).
  std::function<void(JobResult&&)> done;
};

// out[rows x output_features] = model(rows of x); one per worker, not shared.
using PredictFn = std::function<void(const InputRows& x, int64_t rows, float* out)>;

struct BatcherOptions {
  int64_t max_batch_size = 64;     // rows per batch
  int64_t max_queue_delay_us = 0;  // 0: batch only what is already waiting
  int64_t max_queue_size = 1024;   // requests waiting at most; 0 = unbounded
};

class Batcher {
 public:
  // One worker thread per instance.
  Batcher(std::vector<PredictFn> instances, int64_t input_features, int64_t output_features,
          BatcherOptions options, std::shared_ptr<VersionStats> stats);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues the job; false (the job left as it was) if the queue is full or the batcher stopped.
  bool submit(Job&& job);
  // Runs every queued job, then joins the workers. Idempotent.
  void stop();
  size_t queued() const;

 private:
  void work(size_t instance);
  void run_batch(size_t instance, std::vector<Job>& batch, InputRows& in, std::vector<float>& out);

  std::vector<PredictFn> instances_;
  const int64_t input_features_, output_features_;
  const BatcherOptions options_;
  std::shared_ptr<VersionStats> stats_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  int64_t queued_rows_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace tern::serve
