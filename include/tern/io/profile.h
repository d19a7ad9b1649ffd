#pragma once
// Reference distributions of data (a model's training inputs, its predictions) and how far
// other data has moved from them: the one implementation behind the export's reference, the
// server's live drift and `tern-data validate`.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tern {

// The distribution of one column over fixed bins.
//   numeric: cut points e_1 < ... < e_{k-1}: the deciles of the reference (numpy's linear
//            quantiles), plus equal-width cut points over [min, max] where the deciles collapse
//            (one value holding most rows); bin 0 is (-inf, e_1), bin i is [e_i, e_{i+1}),
//            bin k-1 is [e_{k-1}, +inf).
//   categorical (few distinct values): bin i holds value values[i]; the last bin, any other value.
// Missing (NaN) and infinite values are counted apart, never binned.
struct ColumnProfile {
  std::string name;
  bool categorical = false;
  std::vector<double> edges;      // numeric
  std::vector<double> values;     // categorical
  std::vector<double> counts;     // rows per bin
  std::vector<double> bin_means;  // mean value of each bin (its position for Wasserstein)
  int64_t rows = 0;               // every row, missing and infinite ones included
  int64_t missing = 0, non_finite = 0;
  double min = 0, max = 0, mean = 0, std = 0;  // of the finite values

  size_t bins() const { return counts.size(); }
  // The bin of a finite value.
  size_t bin_of(double v) const;
};

struct DataProfile {
  std::vector<ColumnProfile> columns;
  bool empty() const { return columns.empty(); }
};

struct ProfileOptions {
  int64_t bins = 10;                // quantile bins of a numeric column (fewer where values repeat)
  int64_t categorical_max = 5;      // at most this many distinct values: categorical (as Evidently)
  int64_t quantile_rows = 1 << 20;  // cut points from an even sample of at most this many rows
};

// The profile of x[rows, cols] (row-major, `stride` floats between rows; cols when 0). names may
// be empty ("f0", "f1", ... then).
DataProfile profile_columns(const float* x, int64_t rows, int64_t cols,
                            const std::vector<std::string>& names, const ProfileOptions& opt = {},
                            int64_t stride = 0);
// The profile of class indices in [0, classes): categorical over every class.
ColumnProfile profile_classes(const std::vector<int64_t>& classes, int64_t num_classes,
                              const std::string& name);

// Other data in a reference column's bins.
struct BinnedColumn {
  std::vector<double> counts, sums;  // per bin: rows and the sum of their values
  int64_t missing = 0, non_finite = 0;
  // No rows yet, in ref's bins.
  static BinnedColumn empty_for(const ColumnProfile& ref);
  void clear();
  double total() const;
  void add(const ColumnProfile& ref, double v);
  void merge(const BinnedColumn& other);
};
BinnedColumn bin_column(const ColumnProfile& ref, const float* x, int64_t rows, int64_t stride);

// How far `current` is from the reference, over the reference's bins:
//   psi: sum (p - q) ln(p / q), empty bins' shares taken as 1e-4 (Evidently's rule);
//   jensen_shannon: the Jensen-Shannon distance, natural logarithm (scipy's jensenshannon);
//   wasserstein: Wasserstein-1 between the bins' masses at their mean values (the reference's
//   and the current data's own), divided by the reference's standard deviation, at least 0.001
//   (Evidently's norm). For categorical columns it is the Wasserstein-1 of the values exactly
//   when every value is one of the reference's (other values share one bin at their mean).
// A column has drifted when its score reaches the threshold (>=, as Evidently).
struct DriftScores {
  double psi = 0, jensen_shannon = 0, wasserstein = 0;
};
DriftScores drift_scores(const ColumnProfile& ref, const BinnedColumn& current);

// Which score decides that a column drifted, and above what.
struct DriftRule {
  // auto | psi | jensen_shannon | wasserstein. PSI by default: on windows of a few hundred rows
  // it keeps sampling noise far below its threshold (docs/serving.md has the figures).
  std::string method = "psi";
  double psi = 0.2;             // 0.1: moderate change, 0.2: significant (the usual rule)
  double jensen_shannon = 0.1;  // Evidently's default
  double wasserstein = 0.1;     // Evidently's default (in reference standard deviations)
  double dataset_share = 0.5;   // the data set drifted when at least this share of columns did
  // auto: Jensen-Shannon for categorical columns, Wasserstein for numeric ones (Evidently's
  // choice for large references).
  std::string method_for(const ColumnProfile& ref) const;
  double threshold(const std::string& method) const;
  double score(const std::string& method, const DriftScores& s) const;
  // InputError naming `where` when the method or a threshold is not valid.
  void validate(const std::string& where) const;
};

nlohmann::json profile_to_json(const DataProfile& p);
// InputError naming `where` and what is wrong.
DataProfile profile_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace tern
