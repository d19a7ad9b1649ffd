#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

#include <boost/program_options.hpp>

#include "tern/base/error.h"
#include "tern/serve/model_options.h"

namespace tern::serve {

namespace {

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return "";
  return std::string(s.substr(b, s.find_last_not_of(" \t") - b + 1));
}

std::optional<int64_t> positive_int(std::string_view s) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < 1) return std::nullopt;
  return v;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, sep);) out.push_back(trim(item));
  return out;
}

VersionPolicy parse_policy(const std::string& text, const std::string& where) {
  const std::string t = trim(text);
  const std::string bad = where + ": version_policy = '" + text +
                          "': expected latest:N, all or specific:V1,V2,... (N, V positive)";
  VersionPolicy p;
  if (t == "all") {
    p.kind = VersionPolicy::Kind::all;
  } else if (t == "latest") {
    p.latest = 1;
  } else if (t.rfind("latest:", 0) == 0) {
    auto n = positive_int(trim(t.substr(7)));
    if (!n) throw InputError(bad);
    p.latest = *n;
  } else if (t.rfind("specific:", 0) == 0) {
    p.kind = VersionPolicy::Kind::specific;
    for (const auto& item : split(t.substr(9), ',')) {
      auto v = positive_int(item);
      if (!v) throw InputError(bad);
      p.versions.push_back(*v);
    }
    if (p.versions.empty()) throw InputError(bad);
  } else {
    throw InputError(bad);
  }
  return p;
}

std::vector<std::pair<int64_t, double>> parse_traffic(const std::string& text,
                                                      const std::string& where) {
  std::vector<std::pair<int64_t, double>> out;
  if (trim(text).empty()) return out;
  double total = 0;
  for (const auto& item : split(text, ',')) {
    const std::string bad = where + ": traffic = '" + text + "': entry '" + item +
                            "' is not VERSION:WEIGHT (e.g. traffic = 1:90, 2:10)";
    const auto colon = item.find(':');
    if (colon == std::string::npos) throw InputError(bad);
    auto v = positive_int(trim(item.substr(0, colon)));
    const std::string w_text = trim(item.substr(colon + 1));
    double w = -1;
    auto [ptr, ec] = std::from_chars(w_text.data(), w_text.data() + w_text.size(), w);
    if (!v || ec != std::errc() || ptr != w_text.data() + w_text.size() || !std::isfinite(w) ||
        w < 0)
      throw InputError(bad);
    for (const auto& [prev, weight] : out)
      if (prev == *v) throw InputError(where + ": traffic names version " + item + " twice");
    out.emplace_back(*v, w);
    total += w;
  }
  if (total <= 0) throw InputError(where + ": traffic = '" + text + "': every weight is zero");
  return out;
}

}  // namespace

ModelOptions parse_model_options(const std::string& text, const std::string& where) {
  namespace po = boost::program_options;
  ModelOptions o;
  MonitoringOptions& m = o.monitoring;
  std::string policy = "latest:1", traffic;
  po::options_description desc;
  desc.add_options()("version_policy", po::value(&policy))(
      "max_batch_size", po::value(&o.max_batch_size))("max_queue_delay_microseconds",
                                                      po::value(&o.max_queue_delay_us))(
      "max_queue_size", po::value(&o.max_queue_size))("instances", po::value(&o.instances))(
      "traffic", po::value(&traffic))("cache", po::value(&o.cache))(
      "input_checks.range", po::value(&m.range_policy))("input_checks.range_margin",
                                                        po::value(&m.range_margin))(
      "drift.enabled", po::value(&m.drift))("drift.window_rows", po::value(&m.drift_window_rows))(
      "drift.window_seconds", po::value(&m.drift_window_seconds))(
      "drift.min_rows", po::value(&m.drift_min_rows))("drift.method",
                                                      po::value(&m.drift_rule.method))(
      "drift.psi_threshold", po::value(&m.drift_rule.psi))("drift.jensen_shannon_threshold",
                                                           po::value(&m.drift_rule.jensen_shannon))(
      "drift.wasserstein_threshold", po::value(&m.drift_rule.wasserstein))(
      "drift.dataset_share", po::value(&m.drift_rule.dataset_share))(
      "feedback.capacity", po::value(&m.feedback_capacity))(
      "feedback.ttl_seconds", po::value(&m.feedback_ttl_seconds))("feedback.window",
                                                                  po::value(&m.feedback_window))(
      "request_log.path", po::value(&m.request_log))("request_log.sample",
                                                     po::value(&m.request_log_sample))(
      "request_log.max_bytes", po::value(&m.request_log_max_bytes))("request_log.keep",
                                                                    po::value(&m.request_log_keep));
  std::istringstream in(text);
  try {
    po::parsed_options parsed = po::parse_config_file(in, desc, true);
    for (const auto& opt : parsed.options)
      if (opt.unregistered) {
        std::string keys;
        for (const auto& d : desc.options()) keys += (keys.empty() ? "" : ", ") + d->long_name();
        throw InputError(where + ": unknown key '" + opt.string_key + "'; keys: " + keys);
      }
    po::variables_map vm;
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(where + ": " + e.what());
  }
  auto require = [&](bool ok, const std::string& key, int64_t value, const char* what) {
    if (!ok) throw InputError(where + ": " + key + " = " + std::to_string(value) + ": " + what);
  };
  auto require_real = [&](bool ok, const std::string& key, double value, const char* what) {
    if (!ok || !std::isfinite(value))
      throw InputError(where + ": " + key + " = " + std::to_string(value) + ": " + what);
  };
  require(o.max_batch_size >= 1 && o.max_batch_size <= (1 << 20), "max_batch_size",
          o.max_batch_size, "must lie in [1, 1048576]");
  require(o.max_queue_delay_us >= 0 && o.max_queue_delay_us <= 10'000'000,
          "max_queue_delay_microseconds", o.max_queue_delay_us, "must lie in [0, 10000000]");
  require(o.max_queue_size >= 0, "max_queue_size", o.max_queue_size,
          "must be >= 0 (0 = unbounded)");
  require(o.instances >= 0 && o.instances <= 256, "instances", o.instances,
          "must lie in [0, 256] (0 = the server's workers)");
  if (m.range_policy != "reject" && m.range_policy != "flag" && m.range_policy != "off")
    throw InputError(where + ": input_checks.range = '" + m.range_policy +
                     "': expected reject, flag or off");
  require_real(m.range_margin >= 0, "input_checks.range_margin", m.range_margin, "must be >= 0");
  require(m.drift_window_rows >= 10 && m.drift_window_rows <= 100'000'000, "drift.window_rows",
          m.drift_window_rows, "must lie in [10, 100000000]");
  require_real(
      m.drift_window_seconds == 0 || (m.drift_window_seconds >= 1 && m.drift_window_seconds <= 1e7),
      "drift.window_seconds", m.drift_window_seconds,
      "must be 0 (a window of drift.window_rows rows) or lie in [1, 10000000]");
  require(m.drift_min_rows >= 1 &&
              (m.drift_window_seconds > 0 || m.drift_min_rows <= m.drift_window_rows),
          "drift.min_rows", m.drift_min_rows,
          "must be >= 1 and, for a window of rows, at most drift.window_rows");
  m.drift_rule.validate(where + ": [drift]");
  require(m.feedback_capacity >= 1, "feedback.capacity", m.feedback_capacity, "must be >= 1");
  require_real(m.feedback_ttl_seconds > 0, "feedback.ttl_seconds", m.feedback_ttl_seconds,
               "must be > 0");
  require(m.feedback_window >= 1, "feedback.window", m.feedback_window, "must be >= 1");
  require_real(m.request_log_sample >= 0 && m.request_log_sample <= 1, "request_log.sample",
               m.request_log_sample, "must lie in [0, 1]");
  require(m.request_log_max_bytes >= 4096, "request_log.max_bytes", m.request_log_max_bytes,
          "must be >= 4096");
  require(m.request_log_keep >= 1 && m.request_log_keep <= 1000, "request_log.keep",
          m.request_log_keep, "must lie in [1, 1000]");
  o.policy = parse_policy(policy, where);
  o.traffic = parse_traffic(traffic, where);
  return o;
}

std::vector<int64_t> policy_candidates(const VersionPolicy& policy,
                                       const std::vector<int64_t>& available) {
  std::vector<int64_t> out = available;
  if (policy.kind == VersionPolicy::Kind::specific)
    std::erase_if(out, [&](int64_t v) {
      return std::find(policy.versions.begin(), policy.versions.end(), v) == policy.versions.end();
    });
  std::sort(out.rbegin(), out.rend());
  return out;
}

nlohmann::json policy_json(const VersionPolicy& policy) {
  switch (policy.kind) {
    case VersionPolicy::Kind::all:
      return {{"all", nlohmann::json::object()}};
    case VersionPolicy::Kind::specific:
      return {{"specific", {{"versions", policy.versions}}}};
    case VersionPolicy::Kind::latest:
      break;
  }
  return {{"latest", {{"num_versions", policy.latest}}}};
}

}  // namespace tern::serve
