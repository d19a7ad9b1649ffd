#include <gtest/gtest.h>

#include <cmath>

#include "tern/base/error.h"
#include "tern/io/profile.h"

namespace tern {
namespace {

ColumnProfile numeric_column(const std::vector<float>& values) {
  return profile_columns(values.data(), static_cast<int64_t>(values.size()), 1, {"x"}).columns[0];
}

TEST(Profile, DecileEdgesAreNumpysLinearQuantiles) {
  std::vector<float> v;
  for (int i = 0; i < 101; ++i) v.push_back(static_cast<float>(i));
  const ColumnProfile c = numeric_column(v);
  ASSERT_FALSE(c.categorical);
  ASSERT_EQ(c.edges.size(), 9u);
  for (int i = 1; i <= 9; ++i) EXPECT_DOUBLE_EQ(c.edges[i - 1], 10.0 * i);
  // [e_i, e_i+1): a value on an edge belongs to the bin above it.
  EXPECT_EQ(c.bin_of(-5), 0u);
  EXPECT_EQ(c.bin_of(10), 1u);
  EXPECT_EQ(c.bin_of(9.99), 0u);
  EXPECT_EQ(c.bin_of(1e9), 9u);
  double total = 0;
  for (double n : c.counts) total += n;
  EXPECT_EQ(total, 101);
  EXPECT_DOUBLE_EQ(c.mean, 50);
}

TEST(Profile, FewDistinctValuesAreCategoricalWithAnOtherBin) {
  std::vector<float> v = {1, 2, 2, 3, 3, 3};
  const ColumnProfile c = numeric_column(v);
  ASSERT_TRUE(c.categorical);
  EXPECT_EQ(c.values, (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(c.counts, (std::vector<double>{1, 2, 3, 0}));
  EXPECT_EQ(c.bin_of(2), 1u);
  EXPECT_EQ(c.bin_of(2.5), 3u);  // any other value
}

TEST(Profile, CollapsedQuantilesGetEqualWidthEdges) {
  std::vector<float> v(1000, 0.0f);
  for (int i = 0; i < 30; ++i) v[i] = static_cast<float>(i % 16 + 1);
  const ColumnProfile c = numeric_column(v);
  ASSERT_FALSE(c.categorical);
  EXPECT_GE(c.edges.size(), 9u);
  // Everything shifted by 4: the mass leaves the bin of 0.
  std::vector<float> shifted = v;
  for (float& x : shifted) x += 4;
  const BinnedColumn cur = bin_column(c, shifted.data(), 1000, 1);
  EXPECT_GT(drift_scores(c, cur).psi, 1.0);
}

TEST(Profile, MissingAndInfiniteValuesAreCountedApart) {
  std::vector<float> v = {1, 2, 3, 4, 5, 6, NAN, INFINITY, 7};
  const ColumnProfile c = numeric_column(v);
  EXPECT_EQ(c.missing, 1);
  EXPECT_EQ(c.non_finite, 1);
  EXPECT_EQ(c.rows, 9);
  EXPECT_DOUBLE_EQ(c.max, 7);
}

TEST(Profile, SameDataHasNoDriftAndAShiftHasMuch) {
  std::vector<float> v;
  for (int i = 0; i < 1000; ++i) v.push_back(static_cast<float>(std::sin(i * 0.37) * 3 + 5));
  const ColumnProfile c = numeric_column(v);
  const DriftScores same = drift_scores(c, bin_column(c, v.data(), 1000, 1));
  EXPECT_NEAR(same.psi, 0, 1e-12);
  EXPECT_NEAR(same.jensen_shannon, 0, 1e-6);
  EXPECT_NEAR(same.wasserstein, 0, 1e-12);
  std::vector<float> moved = v;
  for (float& x : moved) x += static_cast<float>(c.std);  // one standard deviation
  const DriftScores shift = drift_scores(c, bin_column(c, moved.data(), 1000, 1));
  EXPECT_GT(shift.psi, 0.2);
  EXPECT_GT(shift.jensen_shannon, 0.1);
  EXPECT_GT(shift.wasserstein, 0.5);
}

TEST(Profile, ScoresMatchHandComputedValues) {
  // Categorical {0, 1}: reference 50/50, current 80/20.
  std::vector<float> ref = {0, 0, 1, 1};
  const ColumnProfile c = numeric_column(ref);
  std::vector<float> cur = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
  const DriftScores s = drift_scores(c, bin_column(c, cur.data(), 10, 1));
  const double psi = (0.5 - 0.8) * std::log(0.5 / 0.8) + (0.5 - 0.2) * std::log(0.5 / 0.2);
  EXPECT_NEAR(s.psi, psi, 1e-12);
  const double kl_p = 0.5 * std::log(0.5 / 0.65) + 0.5 * std::log(0.5 / 0.35);
  const double kl_q = 0.8 * std::log(0.8 / 0.65) + 0.2 * std::log(0.2 / 0.35);
  EXPECT_NEAR(s.jensen_shannon, std::sqrt(0.5 * kl_p + 0.5 * kl_q), 1e-12);
  // W1 between {0: .5, 1: .5} and {0: .8, 1: .2} is 0.3, over the reference std 0.5.
  EXPECT_NEAR(s.wasserstein, 0.3 / 0.5, 1e-12);
}

TEST(Profile, RuleChoosesTheMethodAndThreshold) {
  DriftRule rule;
  ColumnProfile cat, num;
  cat.categorical = true;
  EXPECT_EQ(rule.method_for(num), "psi");
  rule.method = "auto";
  EXPECT_EQ(rule.method_for(cat), "jensen_shannon");
  EXPECT_EQ(rule.method_for(num), "wasserstein");
  EXPECT_DOUBLE_EQ(rule.threshold("psi"), 0.2);
  rule.method = "kl";
  EXPECT_THROW(rule.validate("here"), InputError);
}

TEST(Profile, JsonRoundTripAndErrors) {
  std::vector<float> x;
  for (int i = 0; i < 200; ++i) x.insert(x.end(), {static_cast<float>(i % 3), i * 0.5f});
  const DataProfile p = profile_columns(x.data(), 200, 2, {"a", "b"});
  const DataProfile back = profile_from_json(profile_to_json(p), "test");
  ASSERT_EQ(back.columns.size(), 2u);
  EXPECT_EQ(back.columns[0].values, p.columns[0].values);
  EXPECT_EQ(back.columns[1].edges, p.columns[1].edges);
  EXPECT_EQ(back.columns[1].counts, p.columns[1].counts);
  nlohmann::json bad = profile_to_json(p);
  bad["columns"][1]["counts"].erase(0);
  try {
    profile_from_json(bad, "model.h5");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("column 'b'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tern
