#include "cpu/parallel.h"

#include <cblas.h>

#include "tern/compute/device.h"
#include "tern/compute/ops.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__SSE3__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tern::cpu {
namespace {

// Workers wait for a job; a job is a function over chunks handed out by an atomic counter. The
// caller takes chunks too, then waits until every worker has finished this job.
class Pool {
 public:
  static constexpr int kSpins = 2000;
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      stop_flag_.store(true);
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()) + 1; }

  void run(int64_t chunks, const std::function<void(int64_t)>& chunk) {
#if defined(__SSE3__)
    csr_ = _mm_getcsr();  // workers compute with the caller's denormal flushing
#endif
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &chunk;
      chunks_ = chunks;
      next_.store(0);
      busy_.store(static_cast<int>(threads_.size()));
      error_ = nullptr;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    take(chunk);
    // The last chunks finish within microseconds of each other: spin briefly before sleeping.
    for (int spin = 0; spin < kSpins && busy_.load() != 0; ++spin) pause();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_.load() == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void take(const std::function<void(int64_t)>& chunk) {
    for (int64_t i = next_.fetch_add(1); i < chunks_; i = next_.fetch_add(1)) chunk(i);
  }
  static void pause() {
#if defined(__SSE2__)
    _mm_pause();
#endif
  }
  void work() {
    uint64_t seen = 0;
    for (;;) {
      // Ops come in quick succession within a step: a worker spins a little (about 50 us) for the
      // next job before it sleeps on the condition variable, whose wake-up costs more.
      for (int spin = 0; spin < kSpins && generation_.load() == seen && !stop_flag_.load(); ++spin)
        pause();
      const std::function<void(int64_t)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
        if (stop_) return;
        seen = generation_.load();
        job = job_;
      }
#if defined(__SSE3__)
      _mm_setcsr(csr_);
#endif
      try {
        take(*job);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (busy_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> busy_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::atomic<bool> stop_flag_{false};
  std::exception_ptr error_;
  unsigned csr_ = 0;
};

std::mutex pool_mutex;
Pool* pool = nullptr;  // replaced by set_op_threads; jobs run from one thread at a time
int threads = 1;

}  // namespace

void set_op_threads(int n) {
  std::lock_guard<std::mutex> lock(pool_mutex);
  n = std::max(n, 1);
  if (n == threads) return;
  delete pool;
  pool = n > 1 ? new Pool(n - 1) : nullptr;
  threads = n;
}

int op_threads() { return threads; }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // A thread other than the pool's owner (a serving worker, the checkpoint writer) runs inline:
  // the pool takes one job at a time.
  std::unique_lock<std::mutex> lock(pool_mutex, std::try_to_lock);
  if (!lock.owns_lock() || !pool || n < 2 * grain) {
    fn(0, n);
    return;
  }
  // A few chunks per thread even out uneven pieces (causal attention's heads are equal; rows of
  // a layer norm are too, but threads start at different times).
  const int64_t chunks = std::min<int64_t>(n / grain, 4 * static_cast<int64_t>(threads));
  const int64_t per = (n + chunks - 1) / chunks;
  pool->run(chunks, [&](int64_t c) {
    const int64_t begin = c * per, end = std::min(n, begin + per);
    if (begin < end) fn(begin, end);
  });
}

}  // namespace tern::cpu

namespace tern {

int configure_cpu_threads(int64_t requested, int local_world) {
  int threads = static_cast<int>(requested);
  if (threads == 0)
    threads = std::max(
        1, static_cast<int>(std::thread::hardware_concurrency()) / std::max(local_world, 1));
  // tern's pool runs the threads (GEMMs split into blocks, attention's heads, ...); OpenBLAS
  // itself stays single-threaded, so its idle workers do not spin beside the pool's.
  openblas_set_num_threads(1);
  cpu::set_op_threads(threads);
  return threads;
}

}  // namespace tern

namespace tern::ops {

void flush_denormals_on_this_thread(bool on) {
#if defined(__SSE3__)
  _MM_SET_FLUSH_ZERO_MODE(on ? _MM_FLUSH_ZERO_ON : _MM_FLUSH_ZERO_OFF);
  _MM_SET_DENORMALS_ZERO_MODE(on ? _MM_DENORMALS_ZERO_ON : _MM_DENORMALS_ZERO_OFF);
#else
  (void)on;
#endif
}

}  // namespace tern::ops
