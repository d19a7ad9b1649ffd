#include "tern/serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace tern::serve {

namespace {

uint64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count()));
}

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

Batcher::Batcher(std::vector<PredictFn> instances, int64_t input_features, int64_t output_features,
                 BatcherOptions options, std::shared_ptr<VersionStats> stats)
    : instances_(std::move(instances)),
      input_features_(input_features),
      output_features_(output_features),
      options_(options),
      stats_(std::move(stats)) {
  for (size_t i = 0; i < instances_.size(); ++i) workers_.emplace_back([this, i] { work(i); });
}

Batcher::~Batcher() { stop(); }

bool Batcher::submit(Job&& job) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    if (options_.max_queue_size > 0 &&
        queue_.size() >= static_cast<size_t>(options_.max_queue_size))
      return false;
    queued_rows_ += job.rows;
    queue_.push_back(std::move(job));
  }
  stats_->pending.fetch_add(1, std::memory_order_relaxed);
  cv_.notify_one();
  return true;
}

void Batcher::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
}

size_t Batcher::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

// The worker that finds requests waiting forms the batch itself, so a batch is formed exactly
// when a worker is free to run it (as Triton's dynamic batcher does) and no thread hands
// batches to another.
void Batcher::work(size_t instance) {
  const auto delay = std::chrono::microseconds(options_.max_queue_delay_us);
  std::vector<Job> batch;
  InputRows in;
  std::vector<float> out;
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to run
    // Wait for more rows until the oldest request has waited max_queue_delay.
    while (!queue_.empty() && !stopping_ && queued_rows_ < options_.max_batch_size) {
      const auto deadline = queue_.front().enqueued + delay;
      if (Clock::now() >= deadline) break;
      cv_.wait_until(lock, deadline);
    }
    if (queue_.empty()) continue;  // another worker took them
    int64_t rows = 0;
    while (!queue_.empty() &&
           (batch.empty() || rows + queue_.front().rows <= options_.max_batch_size)) {
      rows += queue_.front().rows;
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    queued_rows_ -= rows;
    if (!queue_.empty()) cv_.notify_one();  // the rest is another worker's next batch
    lock.unlock();
    run_batch(instance, batch, in, out);
    batch.clear();
    lock.lock();
  }
}

void Batcher::run_batch(size_t instance, std::vector<Job>& batch, InputRows& in,
                        std::vector<float>& out) {
  const auto start = Clock::now();
  int64_t rows = 0;
  for (const auto& job : batch) rows += job.rows;
  in.features.clear();
  in.tokens.clear();
  in.features.reserve(batch.front().input.features.size() ? rows * input_features_ : 0);
  in.tokens.reserve(batch.front().input.tokens.size() ? rows * input_features_ : 0);
  out.resize(static_cast<size_t>(rows * output_features_));
  for (const auto& job : batch) in.append(job.input);
  const auto inputs_ready = Clock::now();
  std::string error;
  try {
    instances_[instance](in, rows, out.data());
  } catch (const std::exception& e) {
    error = std::string("model execution failed: ") + e.what();
  }
  const auto computed = Clock::now();

  std::vector<JobResult> results(batch.size());
  const float* src = out.data();
  for (size_t i = 0; i < batch.size(); ++i) {
    const size_t n = static_cast<size_t>(batch[i].rows * output_features_);
    if (error.empty()) results[i].output.assign(src, src + n);
    src += n;
  }
  const auto finished = Clock::now();

  const uint64_t input_ns = ns_between(start, inputs_ready);
  const uint64_t infer_ns = ns_between(inputs_ready, computed);
  const uint64_t output_ns = ns_between(computed, finished);
  if (error.empty()) stats_->record_batch(rows, input_ns, infer_ns, output_ns);
  stats_->last_inference_ms.store(now_ms(), std::memory_order_relaxed);
  for (size_t i = 0; i < batch.size(); ++i) {
    JobResult& r = results[i];
    r.error = error;
    r.queue_ns = ns_between(batch[i].enqueued, start);
    r.input_ns = input_ns;
    r.infer_ns = infer_ns;
    r.output_ns = output_ns;
    r.input = std::move(batch[i].input);
    // Triton's accounting: each request is charged the phases of the batch it ran in.
    stats_->queue.add(r.queue_ns);
    stats_->queue_seconds.observe_ns(r.queue_ns);
    if (error.empty()) {
      stats_->compute_input.add(input_ns);
      stats_->compute_infer.add(infer_ns);
      stats_->compute_output.add(output_ns);
      stats_->compute_seconds.observe_ns(input_ns + infer_ns + output_ns);
    }
    stats_->pending.fetch_sub(1, std::memory_order_relaxed);
    batch[i].done(std::move(r));
  }
}

}  // namespace tern::serve
