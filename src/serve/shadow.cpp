#include "tern/serve/shadow.h"

#include <cmath>

namespace tern::serve {

void ShadowStats::compare(const float* primary, const float* other, int64_t rows,
                          int64_t features) {
  uint64_t agreed = 0;
  double diff = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = primary + r * features;
    const float* b = other + r * features;
    int64_t best_a = 0, best_b = 0;
    double sum = 0;
    for (int64_t j = 0; j < features; ++j) {
      if (a[j] > a[best_a]) best_a = j;
      if (b[j] > b[best_b]) best_b = j;
      sum += std::fabs(static_cast<double>(a[j]) - static_cast<double>(b[j]));
    }
    agreed += best_a == best_b;
    diff += sum / static_cast<double>(features);
  }
  rows_agreed.fetch_add(agreed, std::memory_order_relaxed);
  rows_compared.fetch_add(static_cast<uint64_t>(rows), std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  abs_diff_sum_ += diff;
}

double ShadowStats::mean_abs_diff() const {
  const uint64_t n = rows_compared.load(std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  return n ? abs_diff_sum_ / static_cast<double>(n) : 0;
}

std::shared_ptr<ShadowStats> ShadowRegistry::get(const std::string& model,
                                                 const std::string& challenger, int64_t version) {
  std::lock_guard lock(mu_);
  auto& slot = stats_[{model, challenger, version}];
  if (!slot) slot = std::make_shared<ShadowStats>(model, challenger, version);
  return slot;
}

std::shared_ptr<ShadowStats> ShadowRegistry::find(const std::string& model,
                                                  const std::string& challenger,
                                                  int64_t version) const {
  std::lock_guard lock(mu_);
  auto it = stats_.find({model, challenger, version});
  return it == stats_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<ShadowStats>> ShadowRegistry::all() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<ShadowStats>> out;
  for (const auto& [key, s] : stats_) out.push_back(s);
  return out;
}

void ShadowRegistry::render(std::string& out) const {
  const auto list = all();
  if (list.empty()) return;
  auto labels = [](const ShadowStats& s) {
    return "model=\"" + escape_label(s.model) + "\",challenger=\"" + escape_label(s.challenger) +
           "\",challenger_version=\"" + std::to_string(s.challenger_version) + "\"";
  };
  auto counter = [&](const char* name, const char* help, auto value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (const auto& s : list)
      out += std::string(name) + "{" + labels(*s) + "} " + std::to_string(value(*s)) + "\n";
  };
  counter("tern_shadow_requests_total", "Requests mirrored to the challenger.",
          [](const ShadowStats& s) { return s.mirrored.load(); });
  counter("tern_shadow_dropped_total", "Requests not mirrored: the challenger's queue was full.",
          [](const ShadowStats& s) { return s.dropped.load(); });
  counter("tern_shadow_errors_total", "Mirrored requests the challenger failed.",
          [](const ShadowStats& s) { return s.errors.load(); });
  counter("tern_shadow_rows_compared_total", "Rows whose answers were compared.",
          [](const ShadowStats& s) { return s.rows_compared.load(); });
  counter("tern_shadow_rows_agreed_total", "Compared rows with the primary's arg-max.",
          [](const ShadowStats& s) { return s.rows_agreed.load(); });
  out +=
      "# HELP tern_shadow_agreement Share of compared rows with the primary's arg-max.\n"
      "# TYPE tern_shadow_agreement gauge\n";
  for (const auto& s : list) {
    const auto t = s->totals();
    out += "tern_shadow_agreement{" + labels(*s) + "} " +
           prometheus_value(
               t.compared ? static_cast<double>(t.agreed) / static_cast<double>(t.compared) : 0) +
           "\n";
  }
  out +=
      "# HELP tern_shadow_mean_abs_diff Mean absolute difference of the outputs, per row.\n"
      "# TYPE tern_shadow_mean_abs_diff gauge\n";
  for (const auto& s : list)
    out += "tern_shadow_mean_abs_diff{" + labels(*s) + "} " + prometheus_value(s->mean_abs_diff()) +
           "\n";
  out +=
      "# HELP tern_shadow_latency_seconds The challenger's latency on mirrored requests.\n"
      "# TYPE tern_shadow_latency_seconds histogram\n";
  for (const auto& s : list) s->latency.render(out, "tern_shadow_latency_seconds", labels(*s));
}

}  // namespace tern::serve
