#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

// Per model version statistics, kept once and shown twice: as Triton's statistics extension
// (GET /v2/models/{m}/stats) and as Prometheus text under Triton's metric names (GET /metrics),
// plus latency histograms for histogram_quantile().
namespace tern::serve {

// A count and a total duration, as Triton's {"count", "ns"}.
struct DurationStat {
  std::atomic<uint64_t> count{0}, ns{0};
  void add(uint64_t nanoseconds) {
    count.fetch_add(1, std::memory_order_relaxed);
    ns.fetch_add(nanoseconds, std::memory_order_relaxed);
  }
  nlohmann::json to_json() const;
};

// A Prometheus histogram of seconds with fixed buckets (100 us to 10 s).
class Histogram {
 public:
  static constexpr std::array<double, 16> kBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                     1,      2.5,     5,      10};
  void observe_ns(uint64_t nanoseconds);
  using Counts = std::array<uint64_t, kBounds.size() + 1>;
  // Observations per bucket (not cumulative), the last one +Inf.
  Counts counts() const;
  // The q-quantile (0..1) of the observations `now - before` in seconds, interpolated within its
  // bucket as histogram_quantile() does; 0 when there were none, the top bound when beyond it.
  static double quantile(const Counts& now, const Counts& before, double q);
  // Appends the _bucket, _sum and _count lines of one labelled series.
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};  // the last one is +Inf
  std::atomic<uint64_t> sum_ns_{0}, count_{0};
};

struct VersionStats {
  VersionStats(std::string model_name, int64_t model_version)
      : model(std::move(model_name)), version(model_version) {}
  const std::string model;
  const int64_t version;

  std::atomic<uint64_t> inference_count{0};  // rows answered (cache hits included)
  std::atomic<uint64_t> execution_count{0};  // batches run
  std::atomic<uint64_t> last_inference_ms{0};
  DurationStat success, fail, queue, compute_input, compute_infer, compute_output, cache_hit,
      cache_miss;
  Histogram request_seconds, queue_seconds, compute_seconds;
  std::atomic<int64_t> pending{0};  // requests queued or running
  // Requests this version failed on the server's side (model errors, non-finite answers,
  // deadlines): what a rollout's success rate counts, unlike a client's 4xx.
  std::atomic<uint64_t> server_failures{0};
  // Missed deadlines: dropped from the queue unrun, or answered at the deadline while the
  // request was still queued or running.
  std::atomic<uint64_t> deadline_queue{0}, deadline_in_flight{0};
  std::atomic<uint64_t> shed{0};  // 429: its queue was full for the request's priority
  // Requests the fallback answered (or tried to), by why the primary did not.
  std::atomic<uint64_t> fallback_error{0}, fallback_deadline{0}, fallback_breaker{0};
  // Requests refused (400) for their values, by reason.
  std::atomic<uint64_t> rejected_non_finite{0}, rejected_not_representable{0},
      rejected_out_of_range{0};
  void count_rejected(const std::string& reason);

  // One batch of `rows` rows ran with these phase times.
  void record_batch(int64_t rows, uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns);
  nlohmann::json to_json() const;

 private:
  struct BatchStat {
    uint64_t count = 0, input_ns = 0, infer_ns = 0, output_ns = 0;
  };
  mutable std::mutex batch_mu_;
  std::map<int64_t, BatchStat> batches_;  // by batch size
};

// Every model version's statistics. Kept across reloads of the same version, so counters only
// go up, as Prometheus expects.
class StatsRegistry {
 public:
  std::shared_ptr<VersionStats> get(const std::string& model, int64_t version);
  // Sorted by model, then version.
  std::vector<std::shared_ptr<VersionStats>> all() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int64_t>, std::shared_ptr<VersionStats>> stats_;
};

// Counters that belong to no model version.
struct ServerCounters {
  std::atomic<uint64_t> http_2xx{0}, http_4xx{0}, http_5xx{0};
  void count_status(int status);
};

struct CacheCounters {
  uint64_t entries = 0, bytes = 0, capacity = 0, evictions = 0;
};

// The Prometheus text exposition (format 0.0.4) of everything above.
std::string render_prometheus(const std::vector<std::shared_ptr<VersionStats>>& stats,
                              const ServerCounters& server, const CacheCounters& cache,
                              uint64_t load_failures);

// Prometheus's standard process series (process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds,
// process_threads), from /proc/self; appended to `out`.
void render_process_metrics(std::string& out);

// A sample value in the text format: the shortest decimal that reads back the same, NaN, +Inf,
// -Inf.
std::string prometheus_value(double v);

// A label value with \, " and newline escaped.
std::string escape_label(const std::string& value);

}  // namespace tern::serve
