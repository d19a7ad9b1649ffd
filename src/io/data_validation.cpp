#include "tern/io/data_validation.h"

#include <cmath>
#include <cstdio>

#include "tern/base/error.h"
#include "tern/io/dataset.h"
#include "tern/io/hdf5_file.h"

namespace tern {
namespace {

std::string dtype_name(const h5::DatasetInfo& info) {
  const char* cls = info.type_class == h5::TypeClass::floating  ? "float"
                    : info.type_class == h5::TypeClass::integer ? "int"
                                                                : "other";
  return cls + std::to_string(info.type_size * 8);
}

std::string format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

}  // namespace

DataReference load_reference(const std::string& path, const ProfileOptions& profile) {
  h5::File file = h5::File::open(path);
  DataReference ref;
  ref.path = path;
  if (file.has_attr("/", "format")) {
    ref.kind = "model";
    if (!file.has_attr("/", "reference_profile"))
      throw InputError("'" + path +
                       "': the export carries no reference_profile (exported by an older tern); "
                       "use the training data file as the reference instead");
    nlohmann::json j =
        nlohmann::json::parse(file.read_attr_string("/", "reference_profile"), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("inputs"))
      throw InputError("'" + path + "': attribute reference_profile is not valid JSON");
    ref.inputs = profile_from_json(j.at("inputs"), "'" + path + "' reference_profile");
    if (ref.inputs.empty())
      throw InputError("'" + path +
                       "': the reference profile has no input columns (a token "
                       "model?)");
    return ref;
  }
  ref.kind = "data";
  if (!file.exists("/train/x"))
    throw InputError("'" + path +
                     "': neither an export (no format attribute) nor a data file "
                     "(no /train/x)");
  ref.x_dtype = dtype_name(file.info("/train/x"));
  ref.has_y = file.exists("/train/y");
  if (ref.has_y) ref.y_dtype = dtype_name(file.info("/train/y"));
  const Tensor x = file.read("/train/x", DType::f32);
  const int64_t rows = x.numel() ? x.dim(0) : 0;
  ref.inputs = profile_columns(x.data<float>(), rows, rows ? x.numel() / rows : 0,
                               feature_names_of(file), profile);
  return ref;
}

ValidationReport validate_data(const DataReference& ref, const std::string& path,
                               const ValidationOptions& opt) {
  h5::File file = h5::File::open(path);
  ValidationReport rep;
  nlohmann::json checks = nlohmann::json::array();
  auto check = [&](const std::string& name, const std::string& where, bool ok,
                   const std::string& detail) {
    checks.push_back({{"check", name}, {"where", where}, {"passed", ok}, {"detail", detail}});
    if (!ok) {
      rep.passed = false;
      rep.failures.push_back(name + ": " + where + ": " + detail);
    }
  };
  const size_t cols = ref.inputs.columns.size();
  std::vector<std::string> splits;
  if (opt.split == "all" || opt.split == "train") splits.push_back("train");
  if ((opt.split == "all" && (file.exists("/val/x") || file.exists("/val/y"))) ||
      opt.split == "val")
    splits.push_back("val");
  nlohmann::json split_reports = nlohmann::json::object();
  std::string table;
  for (const std::string& split : splits) {
    const std::string xs = "/" + split + "/x", ys = "/" + split + "/y";
    if (!file.exists(xs)) {
      check("schema", path + " " + xs, false, "the dataset is missing");
      continue;
    }
    const h5::DatasetInfo info = file.info(xs);
    const std::string dtype = dtype_name(info);
    const bool numeric = info.type_class != h5::TypeClass::other;
    check("schema", path + " " + xs, numeric && dtype == ref.x_dtype,
          "dtype " + dtype + ", the reference has " + ref.x_dtype);
    const int64_t rows = info.dims.empty() ? 0 : info.dims[0];
    const int64_t width = rows && info.dims.size() >= 2 ? shape_numel(info.dims) / rows : 0;
    const bool shape_ok = info.dims.size() >= 2 && width == static_cast<int64_t>(cols);
    check("schema", path + " " + xs, shape_ok,
          "shape " + shape_str(info.dims) + ", the reference has " + std::to_string(cols) +
              " features per row");
    if (ref.kind == "data") {
      if (ref.has_y && !file.exists(ys))
        check("schema", path + " " + ys, false, "the dataset is missing (the reference has it)");
      else if (ref.has_y)
        check("schema", path + " " + ys, dtype_name(file.info(ys)) == ref.y_dtype,
              "dtype " + dtype_name(file.info(ys)) + ", the reference has " + ref.y_dtype);
    }
    if (split == "train") {
      const std::vector<std::string> names = feature_names_of(file);
      bool same = names.empty();
      if (!same && names.size() == cols) {
        same = true;
        for (size_t c = 0; c < cols; ++c) same &= names[c] == ref.inputs.columns[c].name;
      }
      // Unnamed reference columns (f0, f1, ...) accept any names.
      if (!same && !ref.inputs.columns.empty() && ref.inputs.columns[0].name == "f0") same = true;
      check("schema", path + " feature_names", same,
            "the feature names differ from the reference's");
    }
    if (!numeric || !shape_ok || rows == 0) continue;

    const Tensor x = file.read(xs, DType::f32);
    const float* v = x.data<float>();
    nlohmann::json features = nlohmann::json::array();
    int64_t drifted = 0;
    char line[256];
    std::snprintf(line, sizeof line, "\n%s (%lld rows)\n%-14s %-11s %-14s %10s %9s %8s %8s %s\n",
                  xs.c_str(), static_cast<long long>(rows), "feature", "kind", "method", "score",
                  "threshold", "missing", "outside", "");
    table += line;
    for (size_t c = 0; c < cols; ++c) {
      const ColumnProfile& rc = ref.inputs.columns[c];
      const BinnedColumn cur = bin_column(rc, v + c, rows, static_cast<int64_t>(cols));
      const DriftScores s = drift_scores(rc, cur);
      const std::string method = opt.rule.method_for(rc);
      const double score = opt.rule.score(method, s), threshold = opt.rule.threshold(method);
      const bool drift = score >= threshold;
      drifted += drift;
      const double width_c = rc.max - rc.min;
      const double low = rc.min - opt.range_margin * width_c,
                   high = rc.max + opt.range_margin * width_c;
      int64_t outside = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const double value = v[r * static_cast<int64_t>(cols) + c];
        if (std::isfinite(value) && (value < low || value > high)) ++outside;
      }
      const std::string where =
          path + " " + xs + " feature " + std::to_string(c) + " ('" + rc.name + "')";
      const int64_t bad_values = cur.missing + cur.non_finite;
      if (static_cast<double>(bad_values) > opt.max_missing_share * static_cast<double>(rows))
        check("missing", where, false,
              std::to_string(cur.missing) + " NaN and " + std::to_string(cur.non_finite) +
                  " infinite value(s) in " + std::to_string(rows) + " rows");
      if (static_cast<double>(outside) > opt.max_out_of_range_share * static_cast<double>(rows))
        check("range", where, false,
              std::to_string(outside) + " of " + std::to_string(rows) +
                  format(" values outside the training range [%g, %g] (margin %g)", rc.min, rc.max,
                         opt.range_margin));
      features.push_back({{"name", rc.name},
                          {"index", c},
                          {"kind", rc.categorical ? "categorical" : "numeric"},
                          {"method", method},
                          {"score", score},
                          {"threshold", threshold},
                          {"drifted", drift},
                          {"psi", s.psi},
                          {"jensen_shannon", s.jensen_shannon},
                          {"wasserstein", s.wasserstein},
                          {"counts", cur.counts},
                          {"missing", cur.missing},
                          {"non_finite", cur.non_finite},
                          {"out_of_range", outside}});
      std::snprintf(line, sizeof line, "%-14.14s %-11s %-14s %10.4g %9.3g %8lld %8lld %s\n",
                    rc.name.c_str(), rc.categorical ? "categorical" : "numeric", method.c_str(),
                    score, threshold, static_cast<long long>(bad_values),
                    static_cast<long long>(outside), drift ? "DRIFT" : "");
      table += line;
    }
    const double share = cols ? static_cast<double>(drifted) / static_cast<double>(cols) : 0;
    const bool too_many = opt.max_drifted_share <= 0 ? drifted > 0 : share > opt.max_drifted_share;
    std::string names;
    for (const auto& f : features)
      if (f["drifted"].get<bool>())
        names += (names.empty() ? "" : ", ") + f["name"].get<std::string>();
    check("drift", path + " " + xs, !too_many,
          std::to_string(drifted) + " of " + std::to_string(cols) + " feature(s) drifted" +
              (names.empty() ? "" : ": " + names));
    split_reports[split] = {{"rows", rows},
                            {"drifted_share", share},
                            {"dataset_drift", share >= opt.rule.dataset_share},
                            {"features", features}};
  }
  rep.json = {{"reference", ref.path}, {"reference_kind", ref.kind}, {"file", path},
              {"passed", rep.passed},  {"checks", checks},           {"splits", split_reports}};
  rep.table = table;
  return rep;
}

}  // namespace tern
