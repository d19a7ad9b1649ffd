#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "temp_dir.h"
#include "tern/base/error.h"
#include "tern/serve/drift_window.h"
#include "tern/serve/feedback.h"
#include "tern/serve/input_checks.h"
#include "tern/serve/model_options.h"
#include "tern/serve/monitoring.h"
#include "tern/serve/protocol.h"
#include "tern/serve/request_log.h"

namespace tern::serve {
namespace {

DataProfile two_features() {
  std::vector<float> x;
  for (int i = 0; i < 1000; ++i)
    x.insert(x.end(), {static_cast<float>(i % 100), i % 2 ? 1.f : 0.f});
  return profile_columns(x.data(), 1000, 2, {"level", "flag"});
}

TEST(DriftWindow, CountWindowKeepsTheLastRowsAndFlagsOnlyTheShiftedFeature) {
  DriftWindowOptions o;
  o.window_rows = 200;
  o.slices = 10;
  o.min_rows = 50;
  DriftWindow w(two_features(), {}, o);
  std::vector<float> rows;
  for (int i = 0; i < 200; ++i)
    rows.insert(rows.end(), {static_cast<float>(i * 7 % 100), i % 2 ? 1.f : 0.f});
  w.observe(rows.data(), 200, 2, nullptr);
  DriftWindow::Report r = w.report();
  EXPECT_EQ(r.rows, 200);
  EXPECT_FALSE(r.inputs[0].drifted);
  EXPECT_FALSE(r.inputs[1].drifted);
  // 200 rows with the level shifted by 50: the window holds only them, and only "level" drifted.
  for (int i = 0; i < 200; ++i) rows[2 * i] += 50;
  w.observe(rows.data(), 200, 2, nullptr);
  r = w.report();
  EXPECT_LE(r.rows, 200);
  EXPECT_GE(r.rows, 180);
  EXPECT_TRUE(r.inputs[0].drifted);
  EXPECT_FALSE(r.inputs[1].drifted);
  EXPECT_DOUBLE_EQ(r.drifted_share, 0.5);
  EXPECT_TRUE(r.dataset_drift);
}

TEST(DriftWindow, TooFewRowsAreNeverCalledDrifted) {
  DriftWindowOptions o;
  o.min_rows = 100;
  DriftWindow w(two_features(), {}, o);
  std::vector<float> row = {1000.f, 7.f};
  w.observe(row.data(), 1, 2, nullptr);
  const auto r = w.report();
  EXPECT_GT(r.inputs[0].scores.psi, 1);
  EXPECT_FALSE(r.inputs[0].drifted);
}

TEST(DriftWindow, TimeWindowForgetsOldSlices) {
  DriftWindowOptions o;
  o.window_seconds = 10;
  o.min_rows = 1;
  DriftWindow w(two_features(), {}, o);
  const auto t0 = Clock::now();
  std::vector<float> row = {5.f, 1.f};
  w.observe(row.data(), 1, 2, nullptr, t0);
  w.observe(row.data(), 1, 2, nullptr, t0 + std::chrono::seconds(5));
  EXPECT_EQ(w.report(t0 + std::chrono::seconds(6)).rows, 2);
  EXPECT_EQ(w.report(t0 + std::chrono::seconds(12)).rows, 1);
  w.observe(row.data(), 1, 2, nullptr, t0 + std::chrono::seconds(60));
  EXPECT_EQ(w.report(t0 + std::chrono::seconds(60)).rows, 1);
}

// One item parsed and joined.
FeedbackJoin::Result give(FeedbackJoin& f, const nlohmann::json& item, Clock::time_point now,
                          const std::vector<std::string>& labels = {}) {
  return f.join({f.parse(item, labels, 10)}, now);
}

TEST(Feedback, AccuracyOverTheWindowUnmatchedAndLate) {
  FeedbackJoin f({/*capacity=*/3, /*ttl_seconds=*/60, /*window=*/4}, true);
  const auto t0 = Clock::now();
  f.record("a", 1, 2, {3, 4}, t0);
  f.record("b", 1, 1, {7}, t0);
  f.record("c", 2, 1, {1}, t0);
  EXPECT_EQ(give(f, {{"id", "a"}, {"labels", {3, 5}}}, t0).matched, 1);
  EXPECT_EQ(give(f, {{"id", "a"}, {"labels", {3, 5}}}, t0).unmatched, 1);  // joined once
  EXPECT_EQ(give(f, {{"id", "b"}, {"label", 7}}, t0 + std::chrono::seconds(61)).late, 1);
  EXPECT_EQ(give(f, {{"id", "zz"}, {"label", 1}}, t0).unmatched, 1);
  EXPECT_THROW(give(f, {{"id", "c"}, {"labels", {1, 2}}}, t0), HttpError);
  EXPECT_THROW(f.parse({{"id", "c"}, {"label", 10}}, {}, 10), HttpError);   // no such class
  EXPECT_THROW(f.parse({{"id", "c"}, {"label", 2.5}}, {}, 10), HttpError);  // no index
  const auto live = f.live();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].version, 1);
  EXPECT_EQ(live[0].rows, 2);
  EXPECT_DOUBLE_EQ(live[0].accuracy, 0.5);
  EXPECT_EQ(f.unmatched(), 2u);
  EXPECT_EQ(f.late(), 1u);
  // Capacity 3: the oldest prediction goes first.
  for (const char* id : {"d", "e", "g", "h"}) f.record(id, 1, 1, {0}, t0);
  EXPECT_EQ(give(f, {{"id", "c"}, {"label", 1}}, t0).unmatched, 1);
  EXPECT_EQ(give(f, {{"id", "h"}, {"label", "zero"}}, t0, {"zero", "one"}).matched, 1);
}

TEST(Feedback, ABatchIsJoinedWholeOrNotAtAll) {
  FeedbackJoin f({10, 60, 10}, true);
  f.record("a", 1, 1, {3});
  f.record("b", 1, 2, {1, 2});
  const std::vector<FeedbackJoin::Item> batch = {f.parse({{"id", "a"}, {"label", 3}}, {}, 10),
                                                 f.parse({{"id", "b"}, {"label", 1}}, {}, 10)};
  EXPECT_THROW(f.join(batch), HttpError);  // b had 2 rows
  EXPECT_TRUE(f.live().empty());
  EXPECT_EQ(f.join({batch[0]}).matched, 1);
}

TEST(Feedback, TheAgeQueueStaysBoundedWhenIdsRepeat) {
  FeedbackJoin f({1000, 60, 10}, true);
  f.record("never-labelled", 1, 1, {0});
  for (int i = 0; i < 100000; ++i) f.record("same", 1, 1, {0});
  EXPECT_LE(f.queued(), 2u * 2 + 1024 + 1);
}

TEST(Feedback, RegressionErrors) {
  FeedbackJoin f({10, 60, 10}, false);
  f.record("r", 3, 2, {1.0f, 5.0f});
  f.join({f.parse({{"id", "r"}, {"target", {2.0, 2.0}}}, {}, 1)});
  const auto live = f.live();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_DOUBLE_EQ(live[0].mae, 2.0);
  EXPECT_DOUBLE_EQ(live[0].rmse, std::sqrt(5.0));
}

TEST(RequestLog, RotatesBySizeAndKeepsTheNewestFiles) {
  tern::testing::TempDir dir;
  const std::string path = dir.path() + "/requests.jsonl";
  RequestLog log({path, /*max_bytes=*/4096, /*keep=*/2});
  InputRows rows;
  rows.features.assign(64, 1.5f);
  const std::vector<float> out(10, 0.25f);
  for (int i = 0; i < 200; ++i)
    log.write_request("digits", 1, "id-" + std::to_string(i), 1, rows, 64, out.data(), 10);
  log.write_feedback("digits", "id-199", {3});
  for (const std::string& p : {path, path + ".1", path + ".2"}) {
    ASSERT_TRUE(std::filesystem::exists(p)) << p;
    EXPECT_LE(std::filesystem::file_size(p), 4096u) << p;
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".3"));
  std::ifstream in(path);
  std::string last, line;
  while (std::getline(in, line)) last = line;
  const auto j = nlohmann::json::parse(last);
  EXPECT_EQ(j["feedback"]["id"], "id-199");
  EXPECT_EQ(j["feedback"]["values"], nlohmann::json::array({3.0}));
}

TEST(ModelWatch, SamplesAnEvenShare) {
  ModelWatch w;
  w.log_sample = 0.25;
  int taken = 0;
  for (int i = 0; i < 1000; ++i) taken += w.sample_request();
  EXPECT_EQ(taken, 250);
}

TEST(InputChecks, PoliciesNameRowAndFeature) {
  FeatureStats s;
  s.min = {0, 10};
  s.max = {1, 20};
  InputChecks reject(s, {"a", "b"}, "reject", 0.1);
  const std::vector<float> ok = {1.05f, 9.5f};
  EXPECT_NO_THROW(reject.check(ok.data(), 1, 2, "input"));
  const std::vector<float> bad = {0.5f, 15.f, 0.5f, 25.f};
  try {
    reject.check(bad.data(), 2, 2, "input");
    FAIL() << "no error";
  } catch (const InputValueError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.reason(), "out_of_range");
    EXPECT_NE(std::string(e.what()).find("row 1, feature 1 ('b')"), std::string::npos) << e.what();
  }
  InputChecks flag(s, {}, "flag", 0.0);
  flag.check(bad.data(), 2, 2, "input");
  EXPECT_EQ(flag.out_of_range(0), 0u);
  EXPECT_EQ(flag.out_of_range(1), 1u);
  EXPECT_EQ(flag.feature_name(1), "f1");
  InputChecks off(s, {}, "off", 0.0);
  EXPECT_FALSE(off.active());
}

TEST(Protocol, NonFiniteAndUnrepresentableValuesAreRefused) {
  ModelSchema s;
  s.input_shape = {2};
  s.output_features = 1;
  s.feature_names = {"a", "b"};
  try {
    parse_infer_request(
        R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[1,1e39]}]})",
        std::nullopt, s);
    FAIL() << "no error";
  } catch (const InputValueError& e) {
    EXPECT_EQ(e.reason(), "not_representable");
    EXPECT_NE(std::string(e.what()).find("row 0, feature 1 ('b')"), std::string::npos) << e.what();
  }
  const std::string head =
      R"({"inputs":[{"name":"input","datatype":"FP64","shape":[1,2],"parameters":{"binary_data_size":16}}]})";
  const double values[2][2] = {{NAN, 1.0}, {2.0, 1e300}};
  const char* reasons[2] = {"non_finite", "not_representable"};
  const char* where[2] = {"row 0, feature 0 ('a'): value NaN",
                          "row 0, feature 1 ('b'): value 1e+300"};
  for (int k = 0; k < 2; ++k) {
    std::string body = head + std::string(reinterpret_cast<const char*>(values[k]), 16);
    try {
      parse_infer_request(body, head.size(), s);
      FAIL() << "no error";
    } catch (const InputValueError& e) {
      EXPECT_EQ(e.reason(), reasons[k]);
      EXPECT_NE(std::string(e.what()).find(where[k]), std::string::npos) << e.what();
    }
  }
}

TEST(ModelOptions, MonitoringKeys) {
  const ModelOptions o = parse_model_options(
      "[input_checks]\nrange = reject\nrange_margin = 0.5\n[drift]\nwindow_rows = 500\n"
      "method = wasserstein\nwasserstein_threshold = 0.3\n[feedback]\nwindow = 50\n"
      "[request_log]\npath = /tmp/x.jsonl\nsample = 0.25\n",
      "config.ini");
  EXPECT_EQ(o.monitoring.range_policy, "reject");
  EXPECT_EQ(o.monitoring.drift_window_rows, 500);
  EXPECT_EQ(o.monitoring.drift_rule.method, "wasserstein");
  EXPECT_DOUBLE_EQ(o.monitoring.drift_rule.wasserstein, 0.3);
  EXPECT_EQ(o.monitoring.feedback_window, 50);
  EXPECT_DOUBLE_EQ(o.monitoring.request_log_sample, 0.25);
  EXPECT_THROW(parse_model_options("[input_checks]\nrange = maybe\n", "c"), InputError);
  EXPECT_THROW(parse_model_options("[drift]\nmethod = kl\n", "c"), InputError);
  EXPECT_THROW(parse_model_options("[drift]\nwindow_rows = 3\n", "c"), InputError);
}

}  // namespace
}  // namespace tern::serve
