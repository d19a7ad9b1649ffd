// Over 600 lines on purpose: one suite of the serving parts that share the fake model and the
// router fixture.
// The server's parts without sockets: model config.ini, the dynamic batcher, the response cache,
// the Prometheus text, the repository's load / check / swap / retire cycle (with a fake loader,
// so no HDF5 file is needed), and the endpoints through the router.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <bit>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fake_model.h"
#include "temp_dir.h"
#include "tern/base/error.h"
#include "tern/infer/export.h"
#include "tern/infer/inference_model.h"
#include "tern/serve/router.h"
#include "tern/serve/server.h"

namespace tern::serve {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// ---- config.ini ----------------------------------------------------------------------------

TEST(ModelOptions, DefaultsAndEveryKey) {
  auto d = parse_model_options("", "m");
  EXPECT_EQ(d.policy.kind, VersionPolicy::Kind::latest);
  EXPECT_EQ(d.policy.latest, 1);
  EXPECT_EQ(d.max_batch_size, 64);
  EXPECT_FALSE(d.cache);
  auto o = parse_model_options(
      "# comment\nversion_policy = specific:1, 3\nmax_batch_size = 16\n"
      "max_queue_delay_microseconds = 250\nmax_queue_size = 7\ninstances = 3\n"
      "traffic = 1:90, 3:10\ncache = true\n",
      "m");
  EXPECT_EQ(o.policy.kind, VersionPolicy::Kind::specific);
  EXPECT_EQ(o.policy.versions, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(o.max_batch_size, 16);
  EXPECT_EQ(o.max_queue_delay_us, 250);
  EXPECT_EQ(o.max_queue_size, 7);
  EXPECT_EQ(o.instances, 3);
  EXPECT_EQ(o.traffic, (std::vector<std::pair<int64_t, double>>{{1, 90}, {3, 10}}));
  EXPECT_TRUE(o.cache);
  EXPECT_EQ(parse_model_options("version_policy = latest:3", "m").policy.latest, 3);
  EXPECT_EQ(parse_model_options("version_policy = all", "m").policy.kind, VersionPolicy::Kind::all);
}

TEST(ModelOptions, ErrorsNameFileKeyAndValue) {
  auto expect_error = [](const std::string& text, std::vector<std::string> words) {
    try {
      parse_model_options(text, "repo/m/config.ini");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InputError& e) {
      for (const auto& w : words)
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what() << " lacks " << w;
    }
  };
  expect_error("max_batch = 4", {"repo/m/config.ini", "unknown key 'max_batch'"});
  expect_error("max_batch_size = many", {"repo/m/config.ini", "max_batch_size"});
  expect_error("max_batch_size = 0", {"max_batch_size = 0"});
  expect_error("max_queue_delay_microseconds = -1", {"max_queue_delay_microseconds"});
  expect_error("version_policy = newest", {"version_policy = 'newest'"});
  expect_error("version_policy = latest:0", {"version_policy"});
  expect_error("version_policy = specific:", {"version_policy"});
  expect_error("traffic = 1-90", {"traffic", "'1-90'"});
  expect_error("traffic = 1:90, 1:10", {"traffic", "twice"});
  expect_error("traffic = 1:0, 2:0", {"every weight is zero"});
  expect_error("traffic = 1:-5", {"traffic"});
  expect_error("cache = perhaps", {"cache"});
}

TEST(ModelOptions, PolicyCandidates) {
  VersionPolicy latest;
  EXPECT_EQ(policy_candidates(latest, {1, 3, 2}), (std::vector<int64_t>{3, 2, 1}));
  VersionPolicy specific{VersionPolicy::Kind::specific, 1, {1, 3, 9}};
  EXPECT_EQ(policy_candidates(specific, {1, 2, 3}), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(policy_json(latest), json::parse(R"({"latest":{"num_versions":1}})"));
}

TEST(ModelState, TrafficSplitByWeight) {
  ModelState state;
  for (int64_t v : {1, 2, 3}) {
    auto lv = std::make_shared<LoadedVersion>();
    lv->version = v;
    state.versions[v] = lv;
  }
  EXPECT_EQ(state.choose()->version, 3);  // no traffic: the newest
  state.options.traffic = {{1, 90}, {2, 10}};
  std::map<int64_t, int> counts;
  for (int i = 0; i < 20000; ++i) ++counts[state.choose()->version];
  EXPECT_EQ(counts[3], 0);
  EXPECT_NEAR(counts[1] / 20000.0, 0.9, 0.02);
  state.versions.erase(2);  // a weighted version that is not ready takes nothing
  for (int i = 0; i < 100; ++i) EXPECT_EQ(state.choose()->version, 1);
  state.versions.erase(1);  // none of the weighted ones ready: the newest
  EXPECT_EQ(state.choose()->version, 3);
}

// ---- the batcher -----------------------------------------------------------------------------

// out[r, c] = sum(x[r]) + c: each row's answer says which row it was.
PredictFn summing_model(int64_t features, int64_t outputs, std::vector<int64_t>* batches,
                        std::mutex* mu) {
  return [=](const InputRows& in, int64_t rows, float* out) {
    const float* x = in.features.data();
    if (batches) {
      std::lock_guard lock(*mu);
      batches->push_back(rows);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float sum = 0;
      for (int64_t f = 0; f < features; ++f) sum += x[r * features + f];
      for (int64_t c = 0; c < outputs; ++c) out[r * outputs + c] = sum + static_cast<float>(c);
    }
  };
}

TEST(Batcher, FormsBatchesWithinTheDelayAndAnswersEveryRow) {
  std::vector<int64_t> batches;
  std::mutex mu;
  auto stats = std::make_shared<VersionStats>("m", 1);
  Batcher batcher({summing_model(2, 2, &batches, &mu)}, 2, 2, {8, 50'000, 0}, stats);
  std::vector<std::promise<JobResult>> results(40);
  for (int i = 0; i < 40; ++i) {
    Job job;
    job.rows = 1;
    job.input.features = {static_cast<float>(i), 0.5f};
    job.done = [&results, i](JobResult&& r) { results[i].set_value(std::move(r)); };
    ASSERT_EQ(batcher.submit(std::move(job)), SubmitResult::queued);
  }
  for (int i = 0; i < 40; ++i) {
    JobResult r = results[i].get_future().get();
    ASSERT_TRUE(r.error.empty());
    EXPECT_EQ(r.output, (std::vector<float>{i + 0.5f, i + 1.5f}));
  }
  std::lock_guard lock(mu);
  EXPECT_LT(batches.size(), 40u);  // requests were batched
  for (int64_t b : batches) EXPECT_LE(b, 8);
  EXPECT_EQ(stats->execution_count.load(), batches.size());
  EXPECT_EQ(stats->queue.count.load(), 40u);
  EXPECT_EQ(stats->pending.load(), 0);
}

TEST(Batcher, MultiRowRequestsAreNeverSplit) {
  std::vector<int64_t> batches;
  std::mutex mu;
  auto stats = std::make_shared<VersionStats>("m", 1);
  Batcher batcher({summing_model(1, 1, &batches, &mu), summing_model(1, 1, &batches, &mu)}, 1, 1,
                  {4, 1000, 0}, stats);
  std::vector<std::promise<JobResult>> results(20);
  for (int i = 0; i < 20; ++i) {
    Job job;
    job.rows = 1 + i % 3;
    job.input.features.assign(static_cast<size_t>(job.rows), static_cast<float>(i));
    job.done = [&results, i](JobResult&& r) { results[i].set_value(std::move(r)); };
    ASSERT_EQ(batcher.submit(std::move(job)), SubmitResult::queued);
  }
  for (int i = 0; i < 20; ++i) {
    JobResult r = results[i].get_future().get();
    EXPECT_EQ(r.output, std::vector<float>(static_cast<size_t>(1 + i % 3), static_cast<float>(i)));
  }
  std::lock_guard lock(mu);
  for (int64_t b : batches) EXPECT_LE(b, 4);
}

TEST(Batcher, FullQueueRefusesAndStopRunsWhatIsQueued) {
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  auto stats = std::make_shared<VersionStats>("m", 1);
  auto blocking = [gate](const InputRows&, int64_t rows, float* out) {
    gate.wait();
    std::fill(out, out + rows, 1.0f);
  };
  Batcher batcher({blocking}, 1, 1, {1, 0, 2}, stats);
  std::atomic<int> answered{0};
  auto job = [&] {
    Job j;
    j.rows = 1;
    j.input.features = {0};
    j.done = [&](JobResult&& r) {
      EXPECT_TRUE(r.error.empty());
      ++answered;
    };
    return j;
  };
  ASSERT_EQ(batcher.submit(job()), SubmitResult::queued);
  while (batcher.queued() > 0) std::this_thread::yield();  // the worker holds the first
  EXPECT_EQ(batcher.submit(job()), SubmitResult::queued);
  EXPECT_EQ(batcher.submit(job()), SubmitResult::queued);
  Job refused = job();
  EXPECT_NE(batcher.submit(std::move(refused)), SubmitResult::queued);
  EXPECT_TRUE(refused.done);  // left as it was, for the caller to answer
  release.set_value();
  batcher.stop();
  EXPECT_EQ(answered.load(), 3);
  EXPECT_NE(batcher.submit(job()), SubmitResult::queued);
}

TEST(Batcher, ModelErrorsReachEveryRequest) {
  auto stats = std::make_shared<VersionStats>("m", 1);
  Batcher batcher({[](const InputRows&, int64_t, float*) { throw std::runtime_error("boom"); }}, 1,
                  1, {4, 0, 0}, stats);
  std::promise<JobResult> result;
  Job j;
  j.rows = 1;
  j.input.features = {0};
  j.done = [&](JobResult&& r) { result.set_value(std::move(r)); };
  ASSERT_EQ(batcher.submit(std::move(j)), SubmitResult::queued);
  EXPECT_NE(result.get_future().get().error.find("boom"), std::string::npos);
}

// ---- the cache and the metrics ------------------------------------------------------------------

TEST(ResponseCache, KeyedByModelVersionAndInputBytes) {
  ResponseCache cache(1 << 20);
  const InputRows in{{1, 2, 3}, {}};
  const auto key = ResponseCache::key("m", 1, 1, in);
  EXPECT_FALSE(cache.find(key));
  cache.insert(key, std::make_shared<const std::vector<float>>(std::vector<float>{9}));
  ASSERT_TRUE(cache.find(key));
  EXPECT_EQ((*cache.find(key))[0], 9);
  EXPECT_FALSE(cache.find(ResponseCache::key("m", 2, 1, in)));
  EXPECT_FALSE(cache.find(ResponseCache::key("n", 1, 1, in)));
  EXPECT_FALSE(cache.find(ResponseCache::key("m", 1, 1, InputRows{{1, 2, 3.0001f}, {}})));
  // Token ids never share a key with features of the same bytes.
  InputRows ids;
  for (float v : in.features) ids.tokens.push_back(std::bit_cast<int32_t>(v));
  EXPECT_NE(ResponseCache::key("m", 1, 1, ids), key);
  EXPECT_EQ(cache.counters().entries, 1u);
}

TEST(ResponseCache, EvictsLeastRecentlyUsedWithinItsBytes) {
  ResponseCache cache(8 * 1024);
  auto out = std::make_shared<const std::vector<float>>(std::vector<float>(64, 1.0f));
  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) {
    keys.push_back(ResponseCache::key("m", 1, 1, InputRows{{static_cast<float>(i)}, {}}));
    cache.insert(keys.back(), out);
    ASSERT_TRUE(cache.find(keys[0]));  // kept in use: never the one evicted
  }
  const auto c = cache.counters();
  EXPECT_LE(c.bytes, c.capacity);
  EXPECT_GT(c.evictions, 0u);
  EXPECT_TRUE(cache.find(keys[0]));
  EXPECT_FALSE(cache.find(keys[1]));
  EXPECT_TRUE(cache.find(keys[99]));
  // An entry over an eighth of the capacity is not kept.
  cache.insert(ResponseCache::key("m", 1, 1, InputRows{{-1}, {}}),
               std::make_shared<const std::vector<float>>(std::vector<float>(1024, 0.0f)));
  EXPECT_FALSE(cache.find(ResponseCache::key("m", 1, 1, InputRows{{-1}, {}})));
}

// Checks the exposition format: one HELP and TYPE per family before its samples, every sample
// of a declared family, histogram buckets cumulative and +Inf equal to _count.
void check_exposition(const std::string& text) {
  std::map<std::string, std::string> types;
  std::istringstream in(text);
  std::map<std::string, uint64_t> last_bucket, inf_bucket, counts;
  for (std::string line; std::getline(in, line);) {
    ASSERT_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      EXPECT_TRUE(types.emplace(name, type).second) << "second TYPE for " << name;
      continue;
    }
    const std::string name = line.substr(0, line.find_first_of("{ "));
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!types.count(family) && name.size() > strlen(suffix) &&
          name.compare(name.size() - strlen(suffix), std::string::npos, suffix) == 0)
        family = name.substr(0, name.size() - strlen(suffix));
    ASSERT_TRUE(types.count(family)) << "sample before its TYPE: " << line;
    const uint64_t value = std::stoull(line.substr(line.rfind(' ') + 1).substr(0, 20));
    if (types[family] == "histogram") {
      const std::string labels = line.substr(line.find('{'), line.find(",le=") - line.find('{'));
      if (name.ends_with("_bucket")) {
        EXPECT_GE(value, last_bucket[family + labels]) << line;
        last_bucket[family + labels] = value;
        if (line.find("le=\"+Inf\"") != std::string::npos) inf_bucket[family + labels] = value;
      } else if (name.ends_with("_count")) {
        counts[family + line.substr(line.find('{'), line.find('}') - line.find('{'))] = value;
        last_bucket[family + labels] = 0;
      }
    }
  }
  for (const auto& [series, n] : counts) EXPECT_EQ(inf_bucket[series], n) << series;
}

TEST(Metrics, PrometheusTextIsValid) {
  auto a = std::make_shared<VersionStats>("digits \"mlp\"", 1);
  auto b = std::make_shared<VersionStats>("other", 2);
  for (uint64_t ns : {50'000ull, 2'000'000ull, 7'000'000'000ull, 60'000'000'000ull})
    a->request_seconds.observe_ns(ns);
  a->success.add(10);
  b->queue_seconds.observe_ns(1);
  ServerCounters server;
  server.count_status(200);
  server.count_status(404);
  const std::string text = render_prometheus({a, b}, server, CacheCounters{1, 2, 3, 4}, 5);
  check_exposition(text);
  EXPECT_NE(text.find("nv_inference_request_success{model=\"digits \\\"mlp\\\"\",version=\"1\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("tern_request_duration_seconds_bucket{model=\"digits \\\"mlp\\\"\","
                      "version=\"1\",le=\"0.0001\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("tern_request_duration_seconds_count{model=\"digits \\\"mlp\\\"\","
                      "version=\"1\"} 4"),
            std::string::npos);
  EXPECT_NE(text.find("tern_http_responses_total{code=\"4xx\"} 1"), std::string::npos);
  EXPECT_NE(text.find("tern_repository_load_failures_total 5"), std::string::npos);
}

// ---- the repository and the endpoints, with a fake model file format ----------------------------

class RepositoryTest : public ::testing::Test {
 protected:
  void write(const std::string& key, const std::string& text) { dir_.write(key, text); }
  std::set<int64_t> ready(const ModelRepository& repo, const std::string& model) {
    std::set<int64_t> out;
    auto snap = repo.snapshot();
    if (auto it = snap->find(model); it != snap->end())
      for (const auto& [v, lv] : it->second->versions) out.insert(v);
    return out;
  }
  tern::testing::TempDir dir_{"tern-serve-test"};
  const std::string root_ = dir_.path();
  StatsRegistry stats_;
};

TEST_F(RepositoryTest, LoadsByPolicyRefusesBrokenVersionsAndSwaps) {
  write("m/1/model.h5", "2 1 100");
  write("m/2/model.h5", "2 1 200");
  write("m/02/model.h5", "2 1 999");  // not a version folder
  write("m/3/other.h5", "2 1 999");   // not the model file
  ModelRepository repo({root_, 1, 1, ControlMode::poll, {}}, stats_, fake_loader);
  repo.poll(true);
  EXPECT_EQ(ready(repo, "m"), (std::set<int64_t>{2}));  // latest:1

  write("m/3/model.h5", "bad");
  repo.poll();
  EXPECT_EQ(ready(repo, "m"), (std::set<int64_t>{2}));  // refused: version 2 keeps serving
  EXPECT_EQ(repo.load_failures(), 1u);
  repo.poll();
  EXPECT_EQ(repo.load_failures(), 1u);  // not retried while the file is unchanged
  auto index = repo.index(false);
  ASSERT_EQ(index.size(), 3u);
  EXPECT_EQ(index[2]["state"], "UNAVAILABLE");
  EXPECT_NE(index[2]["reason"].get<std::string>().find("not a model"), std::string::npos);
  EXPECT_EQ(repo.index(true).size(), 1u);

  write("m/3/model.h5", "2 1 300");  // fixed
  repo.poll();
  EXPECT_EQ(ready(repo, "m"), (std::set<int64_t>{3}));

  write("m/config.ini", "version_policy = all\n");
  repo.poll();
  EXPECT_EQ(ready(repo, "m"), (std::set<int64_t>{1, 2, 3}));
  write("m/config.ini", "version_policy = nonsense\n");
  repo.poll();  // a broken config leaves the model as it was
  EXPECT_EQ(ready(repo, "m"), (std::set<int64_t>{1, 2, 3}));
  write("m/config.ini", "version_policy = specific:1,2\n");
  repo.poll();
  EXPECT_EQ(ready(repo, "m"), (std::set<int64_t>{1, 2}));

  fs::remove_all(fs::path(root_) / "m");
  repo.poll();
  EXPECT_TRUE(repo.snapshot()->empty());
}

TEST_F(RepositoryTest, ARequestKeepsItsVersionThroughASwap) {
  write("m/1/model.h5", "1 1 100");
  ModelRepository repo({root_, 1, 1, ControlMode::poll, {}}, stats_, fake_loader);
  repo.poll(true);
  std::shared_ptr<LoadedVersion> held = repo.snapshot()->at("m")->versions.at(1);
  write("m/2/model.h5", "1 1 200");
  repo.poll();
  EXPECT_EQ(ready(repo, "m"), (std::set<int64_t>{2}));
  // Version 1 is out of the snapshot but still runs the request that holds it.
  std::promise<JobResult> result;
  Job job;
  job.rows = 1;
  job.input.features = {1};
  job.done = [&](JobResult&& r) { result.set_value(std::move(r)); };
  ASSERT_EQ(held->batcher->submit(std::move(job)), SubmitResult::queued);
  EXPECT_EQ(result.get_future().get().output, std::vector<float>{101});
  held.reset();
  repo.poll();  // now unloaded
}

TEST_F(RepositoryTest, MissingFolderIsAnInputError) {
  EXPECT_THROW(ModelRepository({root_ + "/nope", 1, 1, ControlMode::poll, {}}, stats_, fake_loader),
               InputError);
}

class RouterTest : public RepositoryTest {
 protected:
  void start(bool with_cache = false, ModelLoader loader = fake_loader) {
    repo_ = std::make_unique<ModelRepository>(RepositoryOptions{root_, 2, 1, ControlMode::poll, {}},
                                              stats_, loader);
    repo_->poll(true);
    if (with_cache) cache_ = std::make_unique<ResponseCache>(1 << 20);
    router_ = std::make_unique<Router>(
        *repo_, stats_, counters_, cache_.get(), [this] { return ready_; },
        [](std::function<void()> fn) { fn(); });
  }
  HttpResponse call(const std::string& method, const std::string& target,
                    const std::string& body = "",
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
    std::promise<HttpResponse> response;
    HttpRequest request{method, target, std::move(headers), body, Clock::now()};
    router_->handle(std::move(request),
                    [&](HttpResponse&& r) { response.set_value(std::move(r)); });
    return response.get_future().get();
  }
  std::unique_ptr<ModelRepository> repo_;
  std::unique_ptr<ResponseCache> cache_;
  std::unique_ptr<Router> router_;
  ServerCounters counters_;
  bool ready_ = true;
};

TEST_F(RouterTest, HealthMetadataConfigAndErrors) {
  write("m/1/model.h5", "2 3 0");
  write("m/config.ini", "max_batch_size = 4\nmax_queue_delay_microseconds = 100\n");
  start();
  EXPECT_EQ(call("GET", "/v2/health/live").status, 200);
  EXPECT_EQ(call("GET", "/v2/health/ready").status, 200);
  ready_ = false;
  EXPECT_EQ(call("GET", "/v2/health/ready").status, 503);
  ready_ = true;
  auto server = json::parse(call("GET", "/v2").body);
  EXPECT_EQ(server["name"], "tern");
  EXPECT_TRUE(server["extensions"].is_array());

  auto meta = json::parse(call("GET", "/v2/models/m").body);
  EXPECT_EQ(meta["versions"], json({"1"}));
  EXPECT_EQ(meta["platform"], "tern");
  EXPECT_EQ(meta["inputs"][0]["shape"], json({-1, 2}));
  EXPECT_EQ(meta["outputs"][0]["name"], "y");
  EXPECT_EQ(call("GET", "/v2/models/m/versions/1").status, 200);
  EXPECT_EQ(call("GET", "/v2/models/m/ready").status, 200);
  EXPECT_EQ(call("GET", "/v2/models/m/versions/1/ready").status, 200);

  auto config = json::parse(call("GET", "/v2/models/m/config").body);
  EXPECT_EQ(config["max_batch_size"], 4);
  EXPECT_EQ(config["dynamic_batching"]["max_queue_delay_microseconds"], 100);
  EXPECT_EQ(config["input"][0]["dims"], json({2}));
  EXPECT_EQ(config["instance_group"][0]["count"], 2);

  auto not_found = call("GET", "/v2/models/nope");
  EXPECT_EQ(not_found.status, 404);
  EXPECT_NE(json::parse(not_found.body)["error"].get<std::string>().find("'nope'"),
            std::string::npos);
  EXPECT_EQ(call("GET", "/v2/models/m/versions/9").status, 404);
  EXPECT_EQ(call("GET", "/v2/models/m/versions/x").status, 400);
  EXPECT_EQ(call("GET", "/v2/models/m/versions/9/ready").status, 404);
  EXPECT_EQ(call("GET", "/v2/nothing").status, 404);
  EXPECT_EQ(call("GET", "/v3").status, 404);
  EXPECT_EQ(call("GET", "/v2/models/m/bogus").status, 404);
  auto wrong_method = call("GET", "/v2/models/m/infer");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(wrong_method.headers.at(0), (std::pair<std::string, std::string>{"Allow", "POST"}));
  EXPECT_EQ(call("DELETE", "/v2/models/m").status, 405);
  EXPECT_EQ(call("GET", "/v2/models/%6D").status, 200);  // percent-encoded "m"
  EXPECT_EQ(call("GET", "/v2/models/%6").status, 400);
  EXPECT_EQ(call("POST", "/v2/repository/index").status, 200);
  EXPECT_EQ(call("POST", "/v2/repository/models/m/unload").status, 403);
}

TEST_F(RouterTest, InferJsonBinaryAndErrors) {
  write("m/1/model.h5", "2 3 10");
  start();
  auto ok = call(
      "POST", "/v2/models/m/infer",
      R"({"id":"q","inputs":[{"name":"input","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]})");
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto j = json::parse(ok.body);
  EXPECT_EQ(j["model_version"], "1");
  EXPECT_EQ(j["id"], "q");
  EXPECT_EQ(j["outputs"][0]["data"], json({13, 14, 15, 17, 18, 19}));

  const std::string head =
      R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}],"parameters":{"binary_data_output":true}})";
  std::string body = head;
  const float x[2] = {1, 1};
  body.append(reinterpret_cast<const char*>(x), sizeof x);
  auto bin = call("POST", "/v2/models/m/versions/1/infer", body,
                  {{"inference-header-content-length", std::to_string(head.size())}});
  ASSERT_EQ(bin.status, 200) << bin.body;
  EXPECT_EQ(bin.content_type, "application/octet-stream");
  ASSERT_EQ(bin.headers.at(0).first, "Inference-Header-Content-Length");
  const size_t json_size = std::stoul(bin.headers.at(0).second);
  ASSERT_EQ(bin.body.size(), json_size + 12);
  float y[3];
  std::memcpy(y, bin.body.data() + json_size, sizeof y);
  EXPECT_EQ(y[0], 12);
  EXPECT_EQ(y[2], 14);

  EXPECT_EQ(call("POST", "/v2/models/m/infer", "{").status, 400);
  EXPECT_EQ(
      call("POST", "/v2/models/m/infer", body, {{"Inference-Header-Content-Length", "x"}}).status,
      400);
  EXPECT_EQ(call("POST", "/v2/models/m/infer", body, {{"Content-Encoding", "gzip"}}).status, 415);
  EXPECT_EQ(call("POST", "/v2/models/zz/infer", body).status, 404);

  auto stats = json::parse(call("GET", "/v2/models/m/stats").body);
  const auto& s = stats["model_stats"][0];
  EXPECT_EQ(s["name"], "m");
  EXPECT_EQ(s["version"], "1");
  EXPECT_EQ(s["inference_count"], 3);
  EXPECT_EQ(s["inference_stats"]["success"]["count"], 2);
  EXPECT_EQ(s["inference_stats"]["fail"]["count"], 3);
  EXPECT_EQ(json::parse(call("GET", "/v2/models/stats").body)["model_stats"].size(), 1u);
  EXPECT_EQ(call("GET", "/v2/models/m/versions/4/stats").status, 404);

  auto metrics = call("GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  check_exposition(metrics.body);
  EXPECT_NE(metrics.body.find("nv_inference_request_failure{model=\"m\",version=\"1\"} 3"),
            std::string::npos);
}

TEST_F(RouterTest, CacheAnswersRepeatedInputs) {
  write("m/1/model.h5", "1 1 0");
  write("m/config.ini", "cache = true\n");
  start(true);
  const std::string body =
      R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[5]}]})";
  for (int i = 0; i < 3; ++i) {
    auto r = call("POST", "/v2/models/m/infer", body);
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(json::parse(r.body)["outputs"][0]["data"], json({5}));
  }
  auto s = json::parse(call("GET", "/v2/models/m/stats").body)["model_stats"][0];
  EXPECT_EQ(s["inference_stats"]["cache_miss"]["count"], 1);
  EXPECT_EQ(s["inference_stats"]["cache_hit"]["count"], 2);
  EXPECT_EQ(s["execution_count"], 1);
  EXPECT_EQ(s["inference_count"], 3);
}

TEST_F(RouterTest, ModelThatFailedToLoadIsNotReady) {
  write("m/1/model.h5", "bad");
  start();
  auto r = call("POST", "/v2/models/m/infer", "{}");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("not a model"), std::string::npos);
}

// ---- language models: tiny exported GPTs through the real loader ------------------------------

constexpr int64_t kContext = 8, kVocab = 11;
const std::vector<std::string> kGpt = {"embedding vocab=11 dim=8", "transformer_block heads=2",
                                       "layernorm", "linear out=11"};

// A model over [positions] token ids, its parameters from the seed, scaled up from GPT-2's small
// initialisation so that logits differ clearly between tokens and positions.
Model token_model(const std::vector<std::string>& layers, int64_t positions, uint64_t seed = 5) {
  Model model(layers, "softmax_cross_entropy", {positions});
  model.init_params(seed);
  float* p = model.params().data<float>();
  for (int64_t i = 0; i < model.num_params(); ++i) p[i] *= 8.0f;
  return model;
}

// Exports it as tern-train exports a language model: INT32 input [T], the vocabulary as labels.
void export_token_model(const std::string& path, const std::vector<std::string>& layers,
                        int64_t labels = kVocab) {
  ExportInfo info;
  info.layers = layers;
  info.loss = "softmax_cross_entropy";
  info.input_shape = {kContext};
  info.input_datatype = "INT32";
  info.output_name = "logits";
  for (int64_t i = 0; i < labels; ++i) info.labels.push_back(std::string(1, char('a' + i)));
  Model model = token_model(layers, kContext);
  fs::create_directories(fs::path(path).parent_path());
  write_export(path, info, model.param_table(), model.params());
}

// The logits after the first `length` ids of each row, computed by the same GPT built for
// exactly `length` positions (the position table cut to its first rows): no padding at all.
std::vector<float> logits_at_own_length(const std::vector<std::vector<int32_t>>& rows) {
  Model full = token_model(kGpt, kContext);
  const int64_t length = static_cast<int64_t>(rows.front().size());
  Model own(kGpt, "softmax_cross_entropy", {length});
  for (const ParamInfo& p : own.param_table())
    for (const ParamInfo& f : full.param_table())
      if (f.name == p.name)  // the [T, dim] position table's first rows are [length, dim]
        std::copy_n(full.params().data<float>() + f.offset, shape_numel(p.shape),
                    own.params().data<float>() + p.offset);
  const int64_t n = static_cast<int64_t>(rows.size());
  Tensor x = Tensor::empty({n, length}, DType::i32);
  for (int64_t r = 0; r < n; ++r)
    std::copy(rows[r].begin(), rows[r].end(), x.data<int32_t>() + r * length);
  const Tensor& y = own.forward(x, StepContext{false, 0, 0, nullptr});
  std::vector<float> out;
  for (int64_t r = 0; r < n; ++r) {
    const float* last = y.data<float>() + ((r + 1) * length - 1) * kVocab;
    out.insert(out.end(), last, last + kVocab);
  }
  return out;
}

std::string token_request(const std::vector<std::vector<int32_t>>& rows,
                          const char* datatype = "INT32") {
  json data = rows;
  return json{{"inputs",
               {{{"name", "input"},
                 {"datatype", datatype},
                 {"shape", {rows.size(), rows.front().size()}},
                 {"data", data}}}}}
      .dump();
}

std::vector<float> logits_of(const HttpResponse& r, size_t rows) {
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return {};
  const auto out = json::parse(r.body)["outputs"][0];
  EXPECT_EQ(out["datatype"], "FP32");
  EXPECT_EQ(out["shape"], json({rows, static_cast<size_t>(kVocab)}));
  return out["data"].get<std::vector<float>>();
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4f) << "element " << i;
}

TEST_F(RouterTest, LanguageModelMetadataAndConfig) {
  export_token_model(root_ + "/lm/1/model.h5", kGpt);
  start(false, load_export);
  const auto& schema = repo_->snapshot()->at("lm")->versions.at(1)->schema;
  EXPECT_TRUE(schema.tokens());
  EXPECT_EQ(schema.vocab, kVocab);
  EXPECT_EQ(schema.min_tokens, 1);  // causal: any length up to the context
  EXPECT_EQ(schema.output_features, kVocab);

  auto meta = json::parse(call("GET", "/v2/models/lm").body);
  EXPECT_EQ(meta["inputs"][0]["datatype"], "INT32");
  EXPECT_EQ(meta["inputs"][0]["shape"], json({-1, -1}));
  EXPECT_EQ(meta["outputs"][0]["name"], "logits");
  EXPECT_EQ(meta["outputs"][0]["datatype"], "FP32");
  EXPECT_EQ(meta["outputs"][0]["shape"], json({-1, kVocab}));
  auto config = json::parse(call("GET", "/v2/models/lm/config").body);
  EXPECT_EQ(config["input"][0]["data_type"], "TYPE_INT32");
  EXPECT_EQ(config["input"][0]["dims"], json({-1}));
  EXPECT_EQ(config["output"][0]["data_type"], "TYPE_FP32");
  EXPECT_EQ(config["output"][0]["dims"], json({kVocab}));
  EXPECT_EQ(config["output"][0]["labels"].size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(config["parameters"]["max_sequence_length"]["string_value"], "8");
  EXPECT_EQ(config["parameters"]["vocab_size"]["string_value"], "11");
}

TEST_F(RouterTest, LanguageModelAnswersNextTokenLogits) {
  const std::string path = root_ + "/lm/1/model.h5";
  export_token_model(path, kGpt);
  start(false, load_export);
  auto reference = InferenceModel::load(path);

  // Full rows: the logits at the last position, as predict_tokens computes them.
  const std::vector<std::vector<int32_t>> full = {
      {0, 1, 2, 3, 4, 5, 6, 7}, {10, 9, 8, 7, 6, 5, 4, 3}, {3, 3, 3, 3, 3, 3, 3, 3}};
  std::vector<int32_t> flat;
  for (const auto& row : full) flat.insert(flat.end(), row.begin(), row.end());
  std::vector<float> all(full.size() * kContext * kVocab), want;
  reference->predict_tokens(flat.data(), static_cast<int64_t>(full.size()), all.data());
  for (size_t r = 0; r < full.size(); ++r)
    want.insert(want.end(), all.begin() + ((r + 1) * kContext - 1) * kVocab,
                all.begin() + (r + 1) * kContext * kVocab);
  const auto got = logits_of(call("POST", "/v2/models/lm/infer", token_request(full)), 3);
  expect_close(got, want);
  expect_close(got, logits_at_own_length(full));
  // Rows differ, so the check compares something.
  EXPECT_NE(std::vector<float>(got.begin(), got.begin() + kVocab),
            std::vector<float>(got.begin() + kVocab, got.begin() + 2 * kVocab));

  // Short prompts: the logits of the same prefix run at its own length, and as predict_tokens
  // gives them at position L - 1 whatever follows.
  const std::vector<std::vector<int32_t>> prompts = {{4, 2, 7}, {1, 0, 10}};
  const auto short_got = logits_of(call("POST", "/v2/models/lm/infer", token_request(prompts)), 2);
  expect_close(short_got, logits_at_own_length(prompts));
  std::vector<int32_t> padded = {4, 2, 7, 9, 9, 9, 9, 9};
  reference->predict_tokens(padded.data(), 1, all.data());
  expect_close(std::vector<float>(short_got.begin(), short_got.begin() + kVocab),
               std::vector<float>(all.begin() + 2 * kVocab, all.begin() + 3 * kVocab));
  EXPECT_NE(std::vector<float>(short_got.begin(), short_got.begin() + kVocab),
            std::vector<float>(all.begin() + 7 * kVocab, all.begin() + 8 * kVocab));
  const auto one = logits_of(call("POST", "/v2/models/lm/infer", token_request({{5}})), 1);
  expect_close(one, logits_at_own_length({{5}}));

  // The same ids as INT64 (binary) and as whole FP32 numbers answer the same.
  const std::string head =
      R"({"inputs":[{"name":"input","datatype":"INT64","shape":[2,3],"parameters":{"binary_data_size":48}}]})";
  const int64_t ids64[6] = {4, 2, 7, 1, 0, 10};
  std::string body = head;
  body.append(reinterpret_cast<const char*>(ids64), sizeof ids64);
  expect_close(logits_of(call("POST", "/v2/models/lm/infer", body,
                              {{"Inference-Header-Content-Length", std::to_string(head.size())}}),
                         2),
               short_got);
  expect_close(logits_of(call("POST", "/v2/models/lm/infer", token_request(prompts, "FP32")), 2),
               short_got);

  // Classification: the likeliest next token with its label from the vocabulary.
  auto cls = call("POST", "/v2/models/lm/infer",
                  R"({"inputs":[{"name":"input","datatype":"INT32","shape":[1,1],"data":[5]}],
                      "outputs":[{"name":"logits","parameters":{"classification":1}}]})");
  ASSERT_EQ(cls.status, 200) << cls.body;
  const int64_t best = std::max_element(one.begin(), one.end()) - one.begin();
  EXPECT_EQ(json::parse(cls.body)["outputs"][0]["data"][0].get<std::string>().substr(
                json::parse(cls.body)["outputs"][0]["data"][0].get<std::string>().rfind(':') + 1),
            std::string(1, char('a' + best)));
}

TEST_F(RouterTest, LanguageModelBatchesRowsOfDifferentLengthsAndCaches) {
  export_token_model(root_ + "/lm/1/model.h5", kGpt);
  write("lm/config.ini",
        "instances = 1\nmax_batch_size = 8\nmax_queue_delay_microseconds = 300000\ncache = true\n");
  start(true, load_export);
  const std::vector<std::vector<int32_t>> prompts = {
      {6}, {6, 1, 2}, {0, 1, 2, 3, 4}, {10, 9, 8, 7, 6, 5, 4, 3}, {6, 1}};
  std::vector<std::promise<HttpResponse>> answers(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i)
    router_->handle(
        HttpRequest{"POST", "/v2/models/lm/infer", {}, token_request({prompts[i]}), Clock::now()},
        [&answers, i](HttpResponse&& r) { answers[i].set_value(std::move(r)); });
  for (size_t i = 0; i < prompts.size(); ++i)
    expect_close(logits_of(answers[i].get_future().get(), 1), logits_at_own_length({prompts[i]}));
  auto s = json::parse(call("GET", "/v2/models/lm/stats").body)["model_stats"][0];
  EXPECT_LT(s["execution_count"].get<int>(), 5);  // rows of lengths 1 to 8 ran together
  EXPECT_EQ(s["inference_count"], 5);

  // The cache keys on the ids and the length: a repeat hits, a longer prompt does not.
  const auto again = logits_of(call("POST", "/v2/models/lm/infer", token_request({{6, 1, 2}})), 1);
  expect_close(again, logits_at_own_length({{6, 1, 2}}));
  s = json::parse(call("GET", "/v2/models/lm/stats").body)["model_stats"][0];
  EXPECT_EQ(s["inference_stats"]["cache_hit"]["count"], 1);
  EXPECT_EQ(s["inference_stats"]["cache_miss"]["count"], 5);
}

TEST_F(RouterTest, LanguageModelBadRequests) {
  export_token_model(root_ + "/lm/1/model.h5", kGpt);
  start(false, load_export);
  auto expect_400 = [&](const std::string& body, std::vector<std::string> words) {
    auto r = call("POST", "/v2/models/lm/infer", body);
    EXPECT_EQ(r.status, 400) << r.body;
    const std::string message = json::parse(r.body).value("error", "");
    for (const auto& w : words)
      EXPECT_NE(message.find(w), std::string::npos) << "'" << message << "' lacks '" << w << "'";
  };
  expect_400(token_request({{1, 2, 11}, {0, 0, 0}}),
             {"'input'", "token id 11", "row 0, position 2", "vocabulary [0, 11)"});
  expect_400(token_request({{0, 0}, {0, -3}}), {"'input'", "token id -3", "row 1, position 1"});
  expect_400(token_request({{0, 1, 2, 3, 4, 5, 6, 7, 8}}),
             {"'input'", "9 tokens per row", "context of 8"});
  expect_400(R"({"inputs":[{"name":"input","datatype":"INT32","shape":[1,0],"data":[]}]})",
             {"'input'", "no tokens"});
  expect_400(R"({"inputs":[{"name":"input","datatype":"BYTES","shape":[1,1],"data":["a"]}]})",
             {"'input'", "datatype 'BYTES'", "INT32"});
  expect_400(R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[1,2.5]}]})",
             {"'input'", "value 2.5", "row 0, position 1", "whole number"});
  auto s = json::parse(call("GET", "/v2/models/lm/stats").body)["model_stats"][0];
  EXPECT_EQ(s["inference_stats"]["fail"]["count"], 6);
  EXPECT_EQ(s["execution_count"], 0);
}

TEST_F(RouterTest, TokenModelsThatAreNotCausalTakeFullRows) {
  // The logits at every position depend on every token: right-padding would change them.
  export_token_model(root_ + "/mix/1/model.h5",
                     {"embedding vocab=11 dim=2", "flatten", "linear out=88", "reshape to=8x11"});
  // A sequence classifier: one answer per row of T ids.
  export_token_model(root_ + "/cls/1/model.h5",
                     {"embedding vocab=11 dim=2", "flatten", "linear out=3"}, 3);
  start(false, load_export);
  const auto& mix = repo_->snapshot()->at("mix")->versions.at(1)->schema;
  EXPECT_EQ(mix.min_tokens, kContext);
  EXPECT_EQ(mix.output_features, kVocab);
  EXPECT_EQ(json::parse(call("GET", "/v2/models/mix").body)["inputs"][0]["shape"],
            json({-1, kContext}));
  auto r = call("POST", "/v2/models/mix/infer", token_request({{1, 2, 3}}));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("not causal"), std::string::npos) << r.body;
  EXPECT_EQ(call("POST", "/v2/models/mix/infer", token_request({{1, 2, 3, 4, 5, 6, 7, 8}})).status,
            200);

  const auto& cls = repo_->snapshot()->at("cls")->versions.at(1)->schema;
  EXPECT_EQ(cls.min_tokens, kContext);
  EXPECT_EQ(cls.output_features, 3);
  auto c = call("POST", "/v2/models/cls/infer", token_request({{1, 2, 3, 4, 5, 6, 7, 8}}));
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_EQ(json::parse(c.body)["outputs"][0]["shape"], json({1, 3}));
}

TEST(ServeFlags, TritonFlagsBecomeServerKeys) {
  EXPECT_EQ(
      translate_triton_flags({"tern-serve", "--model-repository=/m", "--http-port", "9",
                              "--server.workers=3", "--model-store=/x"}),
      (std::vector<std::string>{"tern-serve", "--server.model_repository=/m", "--server.http_port",
                                "9", "--server.workers=3", "--server.model_repository=/x"}));
}

}  // namespace
}  // namespace tern::serve
