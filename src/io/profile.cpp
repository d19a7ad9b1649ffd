#include "tern/io/profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tern/base/error.h"

namespace tern {
namespace {

// "f<c>" for a column without a name.
std::string column_name(int64_t c) {
  char name[32];
  std::snprintf(name, sizeof name, "f%lld", static_cast<long long>(c));
  return name;
}

// numpy's default quantile (linear interpolation between the closest ranks) of sorted values.
double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

// Wasserstein-1 between masses p at positions a and masses q at positions b (both sum to 1).
double wasserstein1(const std::vector<double>& a, const std::vector<double>& p,
                    const std::vector<double>& b, const std::vector<double>& q) {
  struct Point {
    double x, dp, dq;
  };
  std::vector<Point> pts;
  pts.reserve(a.size() + b.size());
  for (size_t i = 0; i < a.size(); ++i) pts.push_back({a[i], p[i], 0});
  for (size_t i = 0; i < b.size(); ++i) pts.push_back({b[i], 0, q[i]});
  std::sort(pts.begin(), pts.end(), [](const Point& l, const Point& r) { return l.x < r.x; });
  double cp = 0, cq = 0, w = 0;
  for (size_t i = 0; i + 1 < pts.size(); ++i) {
    cp += pts[i].dp;
    cq += pts[i].dq;
    w += std::fabs(cp - cq) * (pts[i + 1].x - pts[i].x);
  }
  return w;
}

std::vector<double> shares(const std::vector<double>& counts) {
  double total = 0;
  for (double c : counts) total += c;
  std::vector<double> out(counts.size(), 0.0);
  if (total > 0)
    for (size_t i = 0; i < counts.size(); ++i) out[i] = counts[i] / total;
  return out;
}

// Where an empty bin sits: its value (categorical) or the middle of its edges (numeric).
double bin_position(const ColumnProfile& c, size_t bin) {
  if (c.categorical) return bin < c.values.size() ? c.values[bin] : c.max;
  if (c.edges.empty()) return c.mean;
  if (bin == 0) return std::min(c.min, c.edges.front());
  if (bin >= c.edges.size()) return std::max(c.max, c.edges.back());
  return 0.5 * (c.edges[bin - 1] + c.edges[bin]);
}

std::vector<double> number_list(const nlohmann::json& j, const char* key) {
  std::vector<double> out;
  for (const auto& v : j.at(key)) out.push_back(v.is_null() ? NAN : v.get<double>());
  return out;
}

}  // namespace

size_t ColumnProfile::bin_of(double v) const {
  if (categorical) {
    auto it = std::lower_bound(values.begin(), values.end(), v);
    return it != values.end() && *it == v ? static_cast<size_t>(it - values.begin())
                                          : values.size();
  }
  return static_cast<size_t>(std::upper_bound(edges.begin(), edges.end(), v) - edges.begin());
}

double BinnedColumn::total() const {
  double t = 0;
  for (double c : counts) t += c;
  return t;
}

void BinnedColumn::add(const ColumnProfile& ref, double v) {
  if (std::isnan(v)) {
    ++missing;
  } else if (!std::isfinite(v)) {
    ++non_finite;
  } else {
    const size_t b = ref.bin_of(v);
    counts[b] += 1;
    sums[b] += v;
  }
}

void BinnedColumn::merge(const BinnedColumn& other) {
  for (size_t b = 0; b < counts.size(); ++b) {
    counts[b] += other.counts[b];
    sums[b] += other.sums[b];
  }
  missing += other.missing;
  non_finite += other.non_finite;
}

BinnedColumn BinnedColumn::empty_for(const ColumnProfile& ref) {
  BinnedColumn out;
  out.counts.assign(ref.bins(), 0.0);
  out.sums.assign(ref.bins(), 0.0);
  return out;
}

void BinnedColumn::clear() {
  std::fill(counts.begin(), counts.end(), 0.0);
  std::fill(sums.begin(), sums.end(), 0.0);
  missing = non_finite = 0;
}

BinnedColumn bin_column(const ColumnProfile& ref, const float* x, int64_t rows, int64_t stride) {
  BinnedColumn out = BinnedColumn::empty_for(ref);
  for (int64_t r = 0; r < rows; ++r) out.add(ref, x[r * stride]);
  return out;
}

DataProfile profile_columns(const float* x, int64_t rows, int64_t cols,
                            const std::vector<std::string>& names, const ProfileOptions& opt,
                            int64_t stride) {
  if (stride == 0) stride = cols;
  DataProfile profile;
  const int64_t step = std::max<int64_t>(1, (rows + opt.quantile_rows - 1) / opt.quantile_rows);
  for (int64_t c = 0; c < cols; ++c) {
    ColumnProfile col;
    // Names label the metric series: an empty or repeated one becomes f<c>.
    col.name = c < static_cast<int64_t>(names.size()) ? names[c] : "";
    for (const ColumnProfile& before : profile.columns)
      if (before.name == col.name) col.name.clear();
    if (col.name.empty()) col.name = column_name(c);
    col.rows = rows;
    std::vector<double> sample;
    double sum = 0;
    int64_t finite = 0;
    col.min = INFINITY;
    col.max = -INFINITY;
    for (int64_t r = 0; r < rows; ++r) {
      const double v = x[r * stride + c];
      if (std::isnan(v)) {
        ++col.missing;
        continue;
      }
      if (!std::isfinite(v)) {
        ++col.non_finite;
        continue;
      }
      ++finite;
      sum += v;
      col.min = std::min(col.min, v);
      col.max = std::max(col.max, v);
      if (r % step == 0) sample.push_back(v);
    }
    if (finite == 0) col.min = col.max = 0;
    col.mean = finite ? sum / static_cast<double>(finite) : 0;
    double sq = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double v = x[r * stride + c];
      if (std::isfinite(v)) sq += (v - col.mean) * (v - col.mean);
    }
    col.std = finite ? std::sqrt(sq / static_cast<double>(finite)) : 0;

    std::sort(sample.begin(), sample.end());
    std::vector<double> distinct = sample;
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    if (static_cast<int64_t>(distinct.size()) <= opt.categorical_max) {
      col.categorical = true;
      col.values = distinct;
    } else {
      for (int64_t i = 1; i < opt.bins; ++i)
        col.edges.push_back(
            quantile(sample, static_cast<double>(i) / static_cast<double>(opt.bins)));
      col.edges.erase(std::unique(col.edges.begin(), col.edges.end()), col.edges.end());
      // Quantiles collapse where one value holds most rows (a pixel that is mostly 0): equal-width
      // cut points over the range are added then, so a shift of that value still changes bins.
      if (static_cast<int64_t>(col.edges.size()) < opt.bins - 1) {
        for (int64_t i = 1; i < opt.bins; ++i)
          col.edges.push_back(col.min + (col.max - col.min) * static_cast<double>(i) /
                                            static_cast<double>(opt.bins));
        std::sort(col.edges.begin(), col.edges.end());
        col.edges.erase(std::unique(col.edges.begin(), col.edges.end()), col.edges.end());
      }
    }
    const size_t bins = col.categorical ? col.values.size() + 1 : col.edges.size() + 1;
    col.counts.assign(bins, 0.0);
    std::vector<double> sums(bins, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const double v = x[r * stride + c];
      if (!std::isfinite(v)) continue;
      const size_t b = col.bin_of(v);
      col.counts[b] += 1;
      sums[b] += v;
    }
    col.bin_means.resize(bins);
    for (size_t b = 0; b < bins; ++b)
      col.bin_means[b] = col.counts[b] > 0 ? sums[b] / col.counts[b] : bin_position(col, b);
    profile.columns.push_back(std::move(col));
  }
  return profile;
}

ColumnProfile profile_classes(const std::vector<int64_t>& classes, int64_t num_classes,
                              const std::string& name) {
  ColumnProfile col;
  col.name = name;
  col.categorical = true;
  col.rows = static_cast<int64_t>(classes.size());
  for (int64_t k = 0; k < num_classes; ++k) col.values.push_back(static_cast<double>(k));
  col.counts.assign(num_classes + 1, 0.0);
  double sum = 0;
  col.min = INFINITY;
  col.max = -INFINITY;
  for (int64_t k : classes) {
    col.counts[col.bin_of(static_cast<double>(k))] += 1;
    sum += static_cast<double>(k);
    col.min = std::min(col.min, static_cast<double>(k));
    col.max = std::max(col.max, static_cast<double>(k));
  }
  if (classes.empty()) col.min = col.max = 0;
  col.mean = classes.empty() ? 0 : sum / static_cast<double>(classes.size());
  double sq = 0;
  for (int64_t k : classes) sq += (static_cast<double>(k) - col.mean) * (k - col.mean);
  col.std = classes.empty() ? 0 : std::sqrt(sq / static_cast<double>(classes.size()));
  col.bin_means.resize(col.counts.size());
  for (size_t b = 0; b < col.counts.size(); ++b) col.bin_means[b] = bin_position(col, b);
  return col;
}

// Evidently's rule for empty bins in PSI: their share becomes 1e-4, or a millionth of the
// smallest share when that is 1e-4 or less.
static double empty_share(const std::vector<double>& shares) {
  double smallest = 1;
  for (double s : shares)
    if (s > 0) smallest = std::min(smallest, s);
  return smallest <= 1e-4 ? smallest / 1e6 : 1e-4;
}

DriftScores drift_scores(const ColumnProfile& ref, const BinnedColumn& current) {
  DriftScores s;
  if (current.total() <= 0 || ref.counts.empty()) return s;
  const std::vector<double> p = shares(ref.counts), q = shares(current.counts);
  const double p_empty = empty_share(p), q_empty = empty_share(q);
  double js = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double pi = p[i] > 0 ? p[i] : p_empty, qi = q[i] > 0 ? q[i] : q_empty;
    s.psi += (pi - qi) * std::log(pi / qi);
    const double m = 0.5 * (p[i] + q[i]);
    if (p[i] > 0) js += 0.5 * p[i] * std::log(p[i] / m);
    if (q[i] > 0) js += 0.5 * q[i] * std::log(q[i] / m);
  }
  s.jensen_shannon = std::sqrt(std::max(js, 0.0));
  std::vector<double> positions(q.size());
  for (size_t b = 0; b < q.size(); ++b)
    positions[b] = current.counts[b] > 0 ? current.sums[b] / current.counts[b] : ref.bin_means[b];
  s.wasserstein = wasserstein1(ref.bin_means, p, positions, q) / std::max(ref.std, 0.001);
  return s;
}

std::string DriftRule::method_for(const ColumnProfile& ref) const {
  if (method != "auto") return method;
  return ref.categorical ? "jensen_shannon" : "wasserstein";
}

double DriftRule::threshold(const std::string& m) const {
  return m == "psi" ? psi : m == "jensen_shannon" ? jensen_shannon : wasserstein;
}

double DriftRule::score(const std::string& m, const DriftScores& s) const {
  return m == "psi" ? s.psi : m == "jensen_shannon" ? s.jensen_shannon : s.wasserstein;
}

void DriftRule::validate(const std::string& where) const {
  if (method != "auto" && method != "psi" && method != "jensen_shannon" && method != "wasserstein")
    throw InputError(where + ": drift method '" + method +
                     "' is not one of auto, psi, jensen_shannon, wasserstein");
  const std::pair<const char*, double> thresholds[] = {{"psi_threshold", psi},
                                                       {"jensen_shannon_threshold", jensen_shannon},
                                                       {"wasserstein_threshold", wasserstein}};
  for (const auto& [key, t] : thresholds)
    if (!(t > 0) || !std::isfinite(t))
      throw InputError(where + ": " + key + " = " + std::to_string(t) +
                       ": must be a positive number");
  if (!(dataset_share > 0 && dataset_share <= 1))
    throw InputError(where + ": dataset_share = " + std::to_string(dataset_share) +
                     ": must lie in (0, 1]");
}

nlohmann::json profile_to_json(const DataProfile& p) {
  nlohmann::json cols = nlohmann::json::array();
  for (const ColumnProfile& c : p.columns) {
    nlohmann::json j = {{"name", c.name},
                        {"kind", c.categorical ? "categorical" : "numeric"},
                        {"counts", c.counts},
                        {"bin_means", c.bin_means},
                        {"rows", c.rows},
                        {"missing", c.missing},
                        {"non_finite", c.non_finite},
                        {"min", c.min},
                        {"max", c.max},
                        {"mean", c.mean},
                        {"std", c.std}};
    if (c.categorical)
      j["values"] = c.values;
    else
      j["edges"] = c.edges;
    cols.push_back(std::move(j));
  }
  return {{"columns", cols}};
}

DataProfile profile_from_json(const nlohmann::json& j, const std::string& where) {
  DataProfile p;
  try {
    for (const auto& jc : j.at("columns")) {
      ColumnProfile c;
      c.name = jc.at("name").get<std::string>();
      const std::string kind = jc.at("kind").get<std::string>();
      if (kind != "numeric" && kind != "categorical")
        throw InputError(where + ": column '" + c.name + "' has kind '" + kind + "'");
      c.categorical = kind == "categorical";
      if (c.categorical)
        c.values = number_list(jc, "values");
      else
        c.edges = number_list(jc, "edges");
      c.counts = number_list(jc, "counts");
      c.bin_means = number_list(jc, "bin_means");
      c.rows = jc.at("rows").get<int64_t>();
      c.missing = jc.value("missing", int64_t{0});
      c.non_finite = jc.value("non_finite", int64_t{0});
      c.min = jc.at("min").get<double>();
      c.max = jc.at("max").get<double>();
      c.mean = jc.at("mean").get<double>();
      c.std = jc.at("std").get<double>();
      const size_t bins = c.categorical ? c.values.size() + 1 : c.edges.size() + 1;
      if (c.counts.size() != bins || c.bin_means.size() != bins ||
          !std::is_sorted(c.edges.begin(), c.edges.end()) ||
          !std::is_sorted(c.values.begin(), c.values.end()))
        throw InputError(where + ": column '" + c.name + "' has " +
                         std::to_string(c.counts.size()) + " counts for " + std::to_string(bins) +
                         " bins, or unsorted edges");
      p.columns.push_back(std::move(c));
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": malformed reference profile: " + e.what());
  }
  return p;
}

}  // namespace tern
