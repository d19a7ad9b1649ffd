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
  std::string policy = "latest:1", traffic, fallback, shadow_model;
  BreakerOptions& b = o.breaker;
  RolloutOptions& r = o.rollout;
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
  desc.add_options()("timeout_ms", po::value(&o.timeout_ms))("fallback", po::value(&fallback))(
      "priority_levels", po::value(&o.priority_levels))("default_priority",
                                                        po::value(&o.default_priority))(
      "sticky_header", po::value(&o.sticky_header))("breaker.enabled", po::value(&b.enabled))(
      "breaker.window", po::value(&b.window))("breaker.min_calls", po::value(&b.min_calls))(
      "breaker.failure_rate", po::value(&b.failure_rate))(
      "breaker.slow_call_ms", po::value(&b.slow_call_ms))("breaker.slow_call_rate",
                                                          po::value(&b.slow_call_rate))(
      "breaker.open_seconds", po::value(&b.open_seconds))("breaker.half_open_calls",
                                                          po::value(&b.half_open_calls))(
      "shadow.model", po::value(&shadow_model))("shadow.version", po::value(&o.shadow.version))(
      "shadow.fraction", po::value(&o.shadow.fraction))("rollout.enabled", po::value(&r.enabled))(
      "rollout.step_weight", po::value(&r.step_weight))("rollout.max_weight",
                                                        po::value(&r.max_weight))(
      "rollout.interval_seconds", po::value(&r.interval_seconds))("rollout.threshold",
                                                                  po::value(&r.threshold))(
      "rollout.min_success_rate", po::value(&r.min_success_rate))("rollout.max_p99_ms",
                                                                  po::value(&r.max_p99_ms))(
      "rollout.min_accuracy", po::value(&r.min_accuracy))("rollout.min_agreement",
                                                          po::value(&r.min_agreement))(
      "rollout.min_requests", po::value(&r.min_requests))("rollout.mirror", po::value(&r.mirror))(
      "fault.control", po::value(&o.fault.control));
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
  require_real(o.timeout_ms >= 0 && o.timeout_ms <= 3.6e6, "timeout_ms", o.timeout_ms,
               "must lie in [0, 3600000] (0 = no limit of the model's own)");
  require(o.priority_levels >= 1 && o.priority_levels <= 16, "priority_levels", o.priority_levels,
          "must lie in [1, 16]");
  require(o.default_priority >= 0 && o.default_priority <= o.priority_levels, "default_priority",
          o.default_priority, "must lie in [0, priority_levels] (0 = the lowest level)");
  if (o.sticky_header.empty() || o.sticky_header.find_first_of(" \t:") != std::string::npos)
    throw InputError(where + ": sticky_header = '" + o.sticky_header +
                     "': must be a header name (no spaces or colons)");
  require(b.window >= 1 && b.window <= 100000, "breaker.window", b.window,
          "must lie in [1, 100000]");
  require(b.min_calls >= 1 && b.min_calls <= b.window, "breaker.min_calls", b.min_calls,
          "must lie in [1, breaker.window]");
  require_real(b.failure_rate > 0 && b.failure_rate <= 100, "breaker.failure_rate", b.failure_rate,
               "must lie in (0, 100] (percent)");
  require_real(b.slow_call_rate > 0 && b.slow_call_rate <= 100, "breaker.slow_call_rate",
               b.slow_call_rate, "must lie in (0, 100] (percent)");
  require_real(b.slow_call_ms > 0, "breaker.slow_call_ms", b.slow_call_ms, "must be > 0");
  require_real(b.open_seconds > 0 && b.open_seconds <= 86400, "breaker.open_seconds",
               b.open_seconds, "must lie in (0, 86400]");
  require(b.half_open_calls >= 1 && b.half_open_calls <= 10000, "breaker.half_open_calls",
          b.half_open_calls, "must lie in [1, 10000]");
  require(o.shadow.version >= 0, "shadow.version", o.shadow.version,
          "must be a version (0 = no shadow)");
  require_real(o.shadow.fraction > 0 && o.shadow.fraction <= 1, "shadow.fraction",
               o.shadow.fraction, "must lie in (0, 1]");
  o.shadow.model = trim(shadow_model);
  require_real(r.step_weight > 0 && r.step_weight <= 100, "rollout.step_weight", r.step_weight,
               "must lie in (0, 100] (percent)");
  require_real(r.max_weight >= r.step_weight && r.max_weight <= 100, "rollout.max_weight",
               r.max_weight, "must lie in [rollout.step_weight, 100] (percent)");
  require_real(r.interval_seconds >= 0.1 && r.interval_seconds <= 86400, "rollout.interval_seconds",
               r.interval_seconds, "must lie in [0.1, 86400]");
  require(r.threshold >= 1 && r.threshold <= 1000, "rollout.threshold", r.threshold,
          "must lie in [1, 1000]");
  require_real(r.min_success_rate >= 0 && r.min_success_rate <= 100, "rollout.min_success_rate",
               r.min_success_rate, "must lie in [0, 100] (percent)");
  require_real(r.max_p99_ms > 0, "rollout.max_p99_ms", r.max_p99_ms, "must be > 0");
  require_real(r.min_accuracy >= 0 && r.min_accuracy <= 1, "rollout.min_accuracy", r.min_accuracy,
               "must lie in [0, 1] (0 = not checked)");
  require_real(r.min_agreement >= 0 && r.min_agreement <= 1, "rollout.min_agreement",
               r.min_agreement, "must lie in [0, 1] (0 = not checked)");
  require(r.min_requests >= 1, "rollout.min_requests", r.min_requests, "must be >= 1");
  if (r.mirror && (o.shadow.version > 0 || !trim(shadow_model).empty()))
    throw InputError(where +
                     ": rollout.mirror and [shadow] exclude each other: a request is "
                     "mirrored to one challenger (the canary, or the shadow)");
  if (r.min_agreement > 0 && !r.mirror)
    throw InputError(where +
                     ": rollout.min_agreement needs rollout.mirror = true (agreement "
                     "is measured on mirrored requests)");
  o.policy = parse_policy(policy, where);
  o.traffic = parse_traffic(traffic, where);
  if (r.enabled && !o.traffic.empty())
    throw InputError(where +
                     ": traffic and rollout.enabled exclude each other: the rollout sets "
                     "the weights (remove traffic, or disable the rollout)");
  if (r.enabled && o.policy.kind == VersionPolicy::Kind::latest && o.policy.latest < 2)
    throw InputError(where +
                     ": rollout.enabled needs two versions loaded (the primary and the "
                     "canary): version_policy = latest:2 (or more), all, or specific");
  if (const std::string f = trim(fallback); !f.empty()) {
    const auto colon = f.find(':');
    o.fallback_model = trim(f.substr(0, colon));
    if (colon != std::string::npos) {
      auto v = positive_int(trim(f.substr(colon + 1)));
      if (!v || o.fallback_model.empty())
        throw InputError(where + ": fallback = '" + fallback +
                         "': expected MODEL or MODEL:VERSION (VERSION positive)");
      o.fallback_version = *v;
    }
  }
  return o;
}

ModelOptions parse_triton_config(const std::string& json_text, const std::string& where) {
  using nlohmann::json;
  const json config = json::parse(json_text, nullptr, false);
  if (config.is_discarded() || !config.is_object())
    throw InputError(where + ": the config must be a JSON object (Triton's model configuration)");
  // Written as config.ini lines, so one parser checks both forms.
  std::string ini;
  auto line = [&](const std::string& key, const std::string& value) {
    // One line each: a newline or a comment mark would read as more (or less) than was sent.
    if (key.find_first_of("\r\n#;=[]") != std::string::npos ||
        value.find_first_of("\r\n#;") != std::string::npos)
      throw InputError(where + ": '" + key +
                       "' holds a newline, '#' or ';', which config keys "
                       "and values cannot");
    ini += key + " = " + value + "\n";
  };
  auto integer = [&](const json& v, const std::string& key) {
    if (!v.is_number_integer()) throw InputError(where + ": '" + key + "' must be an integer");
    return std::to_string(v.get<int64_t>());
  };
  for (const auto& [key, value] : config.items()) {
    if (key == "name" || key == "platform" || key == "backend" || key == "input" ||
        key == "output") {
      continue;  // fixed by the export itself
    } else if (key == "max_batch_size") {
      if (value.is_number_integer() && value.get<int64_t>() == 0)
        throw InputError(where +
                         ": max_batch_size = 0 (no batch dimension) is not supported: "
                         "tern's models always take a batch of rows");
      line("max_batch_size", integer(value, key));
    } else if (key == "version_policy" && value.is_object()) {
      if (value.contains("all")) {
        line("version_policy", "all");
      } else if (value.contains("latest")) {
        line("version_policy", "latest:" + integer(value["latest"].value("num_versions", json(1)),
                                                   "version_policy.latest.num_versions"));
      } else if (value.contains("specific")) {
        std::string list;
        for (const auto& v : value["specific"].value("versions", json::array()))
          list += (list.empty() ? "" : ",") + integer(v, "version_policy.specific.versions");
        line("version_policy", "specific:" + list);
      } else {
        throw InputError(where + ": version_policy must hold latest, all or specific");
      }
    } else if (key == "dynamic_batching" && value.is_object()) {
      if (value.contains("max_queue_delay_microseconds"))
        line("max_queue_delay_microseconds",
             integer(value["max_queue_delay_microseconds"], "max_queue_delay_microseconds"));
      if (value.contains("default_queue_policy") &&
          value["default_queue_policy"].contains("max_queue_size"))
        line("max_queue_size", integer(value["default_queue_policy"]["max_queue_size"],
                                       "default_queue_policy.max_queue_size"));
      if (value.contains("priority_levels"))
        line("priority_levels", integer(value["priority_levels"], "priority_levels"));
      if (value.contains("default_priority_level"))
        line("default_priority",
             integer(value["default_priority_level"], "default_priority_level"));
    } else if (key == "instance_group" && value.is_array() && !value.empty()) {
      line("instances", integer(value[0].value("count", json(1)), "instance_group.count"));
    } else if (key == "response_cache" && value.is_object()) {
      line("cache", value.value("enable", false) ? "true" : "false");
    } else if (key == "parameters" && value.is_object()) {
      for (const auto& [name, p] : value.items()) {
        if (!p.is_object() || !p.contains("string_value") || !p["string_value"].is_string())
          throw InputError(where + ": parameter '" + name +
                           "' must be {\"string_value\": \"...\"}");
        line(name, p["string_value"].get<std::string>());
      }
    } else {
      throw InputError(where + ": config key '" + key +
                       "' is not supported by tern (put tern's settings in parameters)");
    }
  }
  // Section-qualified keys (drift.window_rows) are accepted as written: boost reads them as such.
  return parse_model_options(ini, where);
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
