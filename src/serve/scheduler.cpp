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
      stats_(std::move(stats)),
      queues_(static_cast<size_t>(std::max<int64_t>(1, options.priority_levels))) {
  for (size_t i = 0; i < instances_.size(); ++i) workers_.emplace_back([this, i] { work(i); });
}

Batcher::~Batcher() { stop(); }

int64_t Batcher::limit_for(int64_t priority) const {
  if (options_.max_queue_size <= 0) return 0;
  const int64_t levels = static_cast<int64_t>(queues_.size());
  const int64_t p = std::clamp<int64_t>(priority, 1, levels);
  return std::max<int64_t>(1, options_.max_queue_size * (levels - p + 1) / levels);
}

SubmitResult Batcher::submit(Job&& job) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return SubmitResult::stopped;
    const int64_t limit = limit_for(job.priority);
    if (limit > 0 && static_cast<int64_t>(queued_) >= limit) return SubmitResult::full;
    queued_rows_ += job.rows;
    ++queued_;
    const size_t level = static_cast<size_t>(
        std::clamp<int64_t>(job.priority, 1, static_cast<int64_t>(queues_.size())) - 1);
    queues_[level].push_back(std::move(job));
  }
  stats_->pending.fetch_add(1, std::memory_order_relaxed);
  cv_.notify_one();
  return SubmitResult::queued;
}

std::deque<Job>* Batcher::front_queue() {
  for (auto& q : queues_)
    if (!q.empty()) return &q;
  return nullptr;
}

void Batcher::take_expired(Clock::time_point now, std::vector<Job>& expired) {
  for (auto& q : queues_)
    for (auto it = q.begin(); it != q.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      queued_rows_ -= it->rows;
      --queued_;
      expired.push_back(std::move(*it));
      it = q.erase(it);
    }
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
  return queued_;
}

// The worker that finds requests waiting forms the batch itself, so a batch is formed exactly
// when a worker is free to run it (as Triton's dynamic batcher does) and no thread hands
// batches to another.
void Batcher::work(size_t instance) {
  const auto delay = std::chrono::microseconds(options_.max_queue_delay_us);
  std::vector<Job> batch, expired;
  InputRows in;
  std::vector<float> out;
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || queued_ > 0; });
    if (queued_ == 0) return;  // stopping, and nothing left to run
    // Wait for more rows until the oldest request of the first level has waited
    // max_queue_delay.
    while (queued_ > 0 && !stopping_ && queued_rows_ < options_.max_batch_size) {
      const auto deadline = front_queue()->front().enqueued + delay;
      if (Clock::now() >= deadline) break;
      cv_.wait_until(lock, deadline);
    }
    // A request whose deadline passed in the queue is answered, not run: its client has gone.
    take_expired(Clock::now(), expired);
    int64_t rows = 0;
    for (std::deque<Job>* q; (q = front_queue()) != nullptr;) {
      if (!batch.empty() && rows + q->front().rows > options_.max_batch_size) break;
      rows += q->front().rows;
      batch.push_back(std::move(q->front()));
      q->pop_front();
      --queued_;
    }
    queued_rows_ -= rows;
    if (queued_ > 0) cv_.notify_one();  // the rest is another worker's next batch
    lock.unlock();
    for (Job& job : expired) {
      JobResult r;
      r.expired = true;
      r.queue_ns = ns_between(job.enqueued, Clock::now());
      r.input = std::move(job.input);
      stats_->pending.fetch_sub(1, std::memory_order_relaxed);
      job.done(std::move(r));
    }
    expired.clear();
    if (!batch.empty()) run_batch(instance, batch, in, out);
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
