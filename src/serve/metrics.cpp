#include "tern/serve/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>

namespace tern::serve {

nlohmann::json DurationStat::to_json() const {
  return {{"count", count.load(std::memory_order_relaxed)},
          {"ns", ns.load(std::memory_order_relaxed)}};
}

void Histogram::observe_ns(uint64_t nanoseconds) {
  const double seconds = static_cast<double>(nanoseconds) * 1e-9;
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(kBounds.begin(), kBounds.end(), seconds) - kBounds.begin());
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(nanoseconds, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Counts Histogram::counts() const {
  Counts out{};
  for (size_t i = 0; i < out.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

double Histogram::quantile(const Counts& now, const Counts& before, double q) {
  Counts d{};
  uint64_t total = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    d[i] = now[i] >= before[i] ? now[i] - before[i] : 0;
    total += d[i];
  }
  if (total == 0) return 0;
  const double rank = q * static_cast<double>(total);
  double seen = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    if (seen + static_cast<double>(d[i]) < rank || d[i] == 0) {
      seen += static_cast<double>(d[i]);
      continue;
    }
    if (i == kBounds.size()) return kBounds.back();
    const double lo = i == 0 ? 0 : kBounds[i - 1], hi = kBounds[i];
    return lo + (hi - lo) * (rank - seen) / static_cast<double>(d[i]);
  }
  return kBounds.back();
}

namespace {

std::string number(double v, std::chars_format format = std::chars_format::general) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, format);
  return std::string(buf, res.ptr);
}

}  // namespace

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  // Prometheus buckets are cumulative: le="x" counts every observation <= x.
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= kBounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    // Fixed notation, as the Prometheus clients write le: "0.0001", not "1e-04".
    const std::string le =
        i < kBounds.size() ? number(kBounds[i], std::chars_format::fixed) : "+Inf";
    out += name + "_bucket{" + labels + ",le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum{" + labels + "} " +
         number(static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) * 1e-9) + "\n";
  out += name + "_count{" + labels + "} " + std::to_string(count_.load(std::memory_order_relaxed)) +
         "\n";
}

void VersionStats::record_batch(int64_t rows, uint64_t input_ns, uint64_t infer_ns,
                                uint64_t output_ns) {
  execution_count.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(batch_mu_);
  BatchStat& b = batches_[rows];
  ++b.count;
  b.input_ns += input_ns;
  b.infer_ns += infer_ns;
  b.output_ns += output_ns;
}

nlohmann::json VersionStats::to_json() const {
  nlohmann::json batch_stats = nlohmann::json::array();
  {
    std::lock_guard lock(batch_mu_);
    for (const auto& [size, b] : batches_)
      batch_stats.push_back({{"batch_size", size},
                             {"compute_input", {{"count", b.count}, {"ns", b.input_ns}}},
                             {"compute_infer", {{"count", b.count}, {"ns", b.infer_ns}}},
                             {"compute_output", {{"count", b.count}, {"ns", b.output_ns}}}});
  }
  return {{"name", model},
          {"version", std::to_string(version)},
          {"last_inference", last_inference_ms.load(std::memory_order_relaxed)},
          {"inference_count", inference_count.load(std::memory_order_relaxed)},
          {"execution_count", execution_count.load(std::memory_order_relaxed)},
          {"inference_stats",
           {{"success", success.to_json()},
            {"fail", fail.to_json()},
            {"queue", queue.to_json()},
            {"compute_input", compute_input.to_json()},
            {"compute_infer", compute_infer.to_json()},
            {"compute_output", compute_output.to_json()},
            {"cache_hit", cache_hit.to_json()},
            {"cache_miss", cache_miss.to_json()}}},
          {"batch_stats", batch_stats}};
}

std::shared_ptr<VersionStats> StatsRegistry::get(const std::string& model, int64_t version) {
  std::lock_guard lock(mu_);
  auto& slot = stats_[{model, version}];
  if (!slot) slot = std::make_shared<VersionStats>(model, version);
  return slot;
}

std::vector<std::shared_ptr<VersionStats>> StatsRegistry::all() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<VersionStats>> out;
  for (const auto& [key, s] : stats_) out.push_back(s);
  return out;
}

void VersionStats::count_rejected(const std::string& reason) {
  auto& counter = reason == "non_finite"          ? rejected_non_finite
                  : reason == "not_representable" ? rejected_not_representable
                                                  : rejected_out_of_range;
  counter.fetch_add(1, std::memory_order_relaxed);
}

void render_process_metrics(std::string& out) {
  auto gauge = [&](const char* name, const char* type, const char* help, double v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + " " + prometheus_value(v) + "\n";
  };
  // /proc/self/stat: fields after the command name (which may hold spaces, so split at its ')').
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t comm_end = stat.rfind(')');
  std::istringstream fields(comm_end == std::string::npos || comm_end + 2 > stat.size()
                                ? std::string()
                                : stat.substr(comm_end + 2));
  std::vector<std::string> f{std::istream_iterator<std::string>(fields),
                             std::istream_iterator<std::string>()};
  // Field numbers of proc(5) minus 3 (pid and comm are gone, and it counts from 1).
  auto field = [&](size_t n) { return n - 3 < f.size() ? std::stod(f[n - 3]) : 0.0; };
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  double boot = 0;
  std::ifstream proc_stat("/proc/stat");
  for (std::string key; proc_stat >> key;)
    if (key == "btime") {
      proc_stat >> boot;
      break;
    }
  size_t fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++fds;
  struct rlimit limit {};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  gauge("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
        (field(14) + field(15)) / ticks);
  gauge("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
        field(24) * page);
  gauge("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", field(23));
  gauge("process_open_fds", "gauge", "Number of open file descriptors.",
        static_cast<double>(fds > 0 ? fds - 1 : 0));  // less the one listing them
  gauge("process_max_fds", "gauge", "Maximum number of open file descriptors.",
        static_cast<double>(limit.rlim_cur));
  gauge("process_start_time_seconds", "gauge",
        "Start time of the process since unix epoch in seconds.", boot + field(22) / ticks);
  gauge("process_threads", "gauge", "Number of OS threads in the process.", field(20));
}

void ServerCounters::count_status(int status) {
  auto& counter = status < 400 ? http_2xx : status < 500 ? http_4xx : http_5xx;
  counter.fetch_add(1, std::memory_order_relaxed);
}

std::string prometheus_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string render_prometheus(const std::vector<std::shared_ptr<VersionStats>>& stats,
                              const ServerCounters& server, const CacheCounters& cache,
                              uint64_t load_failures) {
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto labels = [](const VersionStats& s) {
    return "model=\"" + escape_label(s.model) + "\",version=\"" + std::to_string(s.version) + "\"";
  };
  using Getter = std::function<uint64_t(const VersionStats&)>;
  auto per_version = [&](const char* name, const char* type, const char* help, Getter get) {
    family(name, type, help);
    for (const auto& s : stats)
      out += std::string(name) + "{" + labels(*s) + "} " + std::to_string(get(*s)) + "\n";
  };
  auto load = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };

  // Triton's names and meanings, so existing dashboards and alerts work unchanged.
  per_version("nv_inference_request_success", "counter",
              "Number of successful inference requests, all batch sizes",
              [&](const VersionStats& s) { return load(s.success.count); });
  per_version("nv_inference_request_failure", "counter",
              "Number of failed inference requests, all batch sizes",
              [&](const VersionStats& s) { return load(s.fail.count); });
  per_version("nv_inference_count", "counter",
              "Number of inferences performed (rows; cache hits included)",
              [&](const VersionStats& s) { return load(s.inference_count); });
  per_version("nv_inference_exec_count", "counter",
              "Number of model executions performed (batches)",
              [&](const VersionStats& s) { return load(s.execution_count); });
  per_version("nv_inference_request_duration_us", "counter",
              "Cumulative inference request duration in microseconds (cache hits included)",
              [&](const VersionStats& s) { return load(s.success.ns) / 1000; });
  per_version("nv_inference_queue_duration_us", "counter",
              "Cumulative inference queuing duration in microseconds",
              [&](const VersionStats& s) { return load(s.queue.ns) / 1000; });
  per_version("nv_inference_compute_input_duration_us", "counter",
              "Cumulative compute input duration in microseconds",
              [&](const VersionStats& s) { return load(s.compute_input.ns) / 1000; });
  per_version("nv_inference_compute_infer_duration_us", "counter",
              "Cumulative compute inference duration in microseconds",
              [&](const VersionStats& s) { return load(s.compute_infer.ns) / 1000; });
  per_version("nv_inference_compute_output_duration_us", "counter",
              "Cumulative inference compute output duration in microseconds",
              [&](const VersionStats& s) { return load(s.compute_output.ns) / 1000; });
  per_version("nv_cache_num_hits_per_model", "counter", "Number of response cache hits per model",
              [&](const VersionStats& s) { return load(s.cache_hit.count); });
  per_version("nv_cache_num_misses_per_model", "counter",
              "Number of response cache misses per model",
              [&](const VersionStats& s) { return load(s.cache_miss.count); });
  per_version("nv_inference_pending_request_count", "gauge",
              "Instantaneous number of pending requests awaiting execution per model",
              [&](const VersionStats& s) {
                return static_cast<uint64_t>(std::max<int64_t>(0, s.pending.load()));
              });

  struct HistogramFamily {
    const char* name;
    const char* help;
    const Histogram VersionStats::*member;
  };
  const HistogramFamily histograms[] = {
      {"tern_request_duration_seconds",
       "Inference request latency from the whole request read to the response ready",
       &VersionStats::request_seconds},
      {"tern_queue_duration_seconds", "Time an inference request waited in the batching queue",
       &VersionStats::queue_seconds},
      {"tern_compute_duration_seconds", "Model execution time of the batch a request ran in",
       &VersionStats::compute_seconds},
  };
  for (const auto& h : histograms) {
    family(h.name, "histogram", h.help);
    for (const auto& s : stats) ((*s).*(h.member)).render(out, h.name, labels(*s));
  }

  family("tern_input_rejected_total", "counter",
         "Inference requests refused (400) for a value of their input, by reason");
  for (const auto& s : stats) {
    const std::pair<const char*, const std::atomic<uint64_t>*> reasons[] = {
        {"non_finite", &s->rejected_non_finite},
        {"not_representable", &s->rejected_not_representable},
        {"out_of_range", &s->rejected_out_of_range}};
    for (const auto& [reason, counter] : reasons)
      out += "tern_input_rejected_total{" + labels(*s) + ",reason=\"" + reason + "\"} " +
             std::to_string(load(*counter)) + "\n";
  }

  family("tern_http_responses_total", "counter", "HTTP responses sent, by status class");
  out += "tern_http_responses_total{code=\"2xx\"} " + std::to_string(load(server.http_2xx)) + "\n";
  out += "tern_http_responses_total{code=\"4xx\"} " + std::to_string(load(server.http_4xx)) + "\n";
  out += "tern_http_responses_total{code=\"5xx\"} " + std::to_string(load(server.http_5xx)) + "\n";
  family("tern_repository_load_failures_total", "counter",
         "Model versions the repository refused (failed to open, check or warm up)");
  out += "tern_repository_load_failures_total " + std::to_string(load_failures) + "\n";

  family("tern_cache_entries", "gauge", "Responses held by the response cache");
  out += "tern_cache_entries " + std::to_string(cache.entries) + "\n";
  family("tern_cache_bytes", "gauge", "Bytes held by the response cache");
  out += "tern_cache_bytes " + std::to_string(cache.bytes) + "\n";
  family("tern_cache_capacity_bytes", "gauge", "Capacity of the response cache ([cache] size_mb)");
  out += "tern_cache_capacity_bytes " + std::to_string(cache.capacity) + "\n";
  family("tern_cache_evictions_total", "counter", "Responses evicted from the response cache");
  out += "tern_cache_evictions_total " + std::to_string(cache.evictions) + "\n";
  return out;
}

}  // namespace tern::serve
