// One semantic suite for every ObjectStore: the local store always, S3 when TERN_TEST_S3_URI
// names a bucket (tests/store/s3_interop.sh runs it against moto on loopback).
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "tern/base/error.h"
#include "tern/io/store.h"

namespace fs = std::filesystem;

namespace tern {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// This test's name, fit for a path: each test works under its own prefix.
std::string test_slug() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string s = std::string(info->test_suite_name()) + "." + info->name();
  for (char& c : s)
    if (c == '/') c = '-';
  return s + "-" + std::to_string(::getpid());
}

// "s3://bucket/prefix" plus `sub`, the rest from the AWS variables, as open_store() does it.
S3Options s3_options(const std::string& uri, const std::string& sub) {
  const std::string rest = uri.substr(5);
  const auto slash = rest.find('/');
  std::string prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  return S3Options::from_env(rest.substr(0, slash), prefix.empty() ? sub : prefix + "/" + sub);
}

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

// What the store logs (its retry lines) while this lives.
class LogCapture {
 public:
  LogCapture() : old_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(old_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return out_.str();
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> old_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const StoreError& e) {
    return e.what();
  }
  return "no error";
}

// Runs f(i) for i in [0, n) on `threads` threads.
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& f) {
  std::atomic<size_t> next{0};
  std::vector<std::jthread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (size_t i; (i = next++) < n;) f(i);
    });
}

class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "local") {
      root_ = fs::temp_directory_path() / ("tern-store-" + test_slug());
      store_ = open_local_store(root_.string());
      return;
    }
    const std::string uri = env("TERN_TEST_S3_URI");
    if (uri.empty())
      GTEST_SKIP() << "TERN_TEST_S3_URI is not set; the S3 half runs in ctest's store_s3_moto "
                      "(tests/store/s3_interop.sh), against moto on loopback";
    options_ = s3_options(uri, test_slug());
    store_ = open_s3_store(options_);
  }

  void TearDown() override {
    if (!store_) return;
    if (GetParam() == "local") {
      fs::remove_all(root_);
      return;
    }
    const auto left = store_->list("");
    parallel_for(left.size(), 8, [&](size_t i) { store_->remove(left[i].key); });
  }

  // The same store, with other S3 settings (the local store has none).
  std::unique_ptr<ObjectStore> reopen(const std::function<void(S3Options&)>& tweak) {
    if (GetParam() == "local") return open_local_store(root_.string());
    S3Options o = options_;
    tweak(o);
    return open_s3_store(o);
  }

  void put(const std::string& key, const std::string& data) {
    store_->put(key, data.data(), data.size());
  }
  std::vector<std::string> keys(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& o : store_->list(prefix)) out.push_back(o.key);
    return out;
  }

  fs::path root_;
  S3Options options_;
  std::unique_ptr<ObjectStore> store_;
};

// One parser for every store URI: the kinds, and a usage error naming where it came from.
TEST(StoreUri, ParsesEveryKindAndNamesTheSettingOfABadOne) {
  const StoreUri s3 = StoreUri::parse("s3://bucket/runs/a//", "k");
  EXPECT_EQ(s3.kind, StoreUri::Kind::s3);
  EXPECT_EQ(s3.bucket, "bucket");
  EXPECT_EQ(s3.prefix, "runs/a");
  EXPECT_EQ(StoreUri::parse("s3://bucket", "k").prefix, "");
  const StoreUri file = StoreUri::parse("file:///data/ckpt", "k");
  EXPECT_EQ(file.kind, StoreUri::Kind::local);
  EXPECT_EQ(file.path, "/data/ckpt");
  EXPECT_EQ(StoreUri::parse("runs/ckpt", "k").path, "runs/ckpt");
  for (const auto& [uri, words] :
       std::vector<std::pair<std::string, std::string>>{{"", "empty"},
                                                        {"s3://", "names no bucket"},
                                                        {"s3:///x", "names no bucket"},
                                                        {"file://", "names no folder"},
                                                        {"gs://b/p", "unknown scheme gs://"}}) {
    try {
      StoreUri::parse(uri, "checkpoint.uri=" + uri + " (from here)");
      ADD_FAILURE() << "'" << uri << "' parsed";
    } catch (const tern::InputError& e) {
      EXPECT_NE(std::string(e.what()).find("checkpoint.uri=" + uri + " (from here): " + words),
                std::string::npos)
          << e.what();
    }
  }
}

TEST_P(StoreTest, PutGetRoundTrip) {
  put("greeting.txt", "hello, store");
  EXPECT_EQ(store_->get("greeting.txt"), "hello, store");
  const auto info = store_->head("greeting.txt");
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->key, "greeting.txt");
  EXPECT_EQ(info->size, 12u);
  EXPECT_NEAR(static_cast<double>(info->mtime), static_cast<double>(std::time(nullptr)), 3600);
}

TEST_P(StoreTest, EmptyObject) {
  put("empty", "");
  EXPECT_EQ(store_->get("empty"), "");
  ASSERT_TRUE(store_->head("empty").has_value());
  EXPECT_EQ(store_->head("empty")->size, 0u);
}

TEST_P(StoreTest, PutReplaces) {
  put("state/latest", "the first version");
  put("state/latest", "v2");
  EXPECT_EQ(store_->get("state/latest"), "v2");
  EXPECT_EQ(store_->head("state/latest")->size, 2u);
  EXPECT_EQ(keys(""), std::vector<std::string>{"state/latest"});
}

TEST_P(StoreTest, GetRange) {
  const std::string data = random_bytes(1000, 7);
  put("ranged.bin", data);
  EXPECT_EQ(store_->get_range("ranged.bin", 10, 20), data.substr(10, 20));
  EXPECT_EQ(store_->get_range("ranged.bin", 0, 1000), data);
  EXPECT_EQ(store_->get_range("ranged.bin", 990, 100), data.substr(990))
      << "a short read at the end";
  EXPECT_EQ(store_->get_range("ranged.bin", 5, 0), "");
  EXPECT_EQ(store_->get_range("ranged.bin", 1000, 5), "");
  EXPECT_EQ(store_->get_range("ranged.bin", 5000, 5), "");
}

TEST_P(StoreTest, HeadOfMissing) { EXPECT_FALSE(store_->head("no/such/object").has_value()); }

TEST_P(StoreTest, GetOfMissingThrowsNamingTheKey) {
  const std::string msg = error_of([&] { store_->get("no-such/key.bin"); });
  EXPECT_NE(msg, "no error");
  EXPECT_NE(msg.find("no-such/key.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("get"), std::string::npos) << msg;
  const std::string ranged = error_of([&] { store_->get_range("no-such/key.bin", 0, 4); });
  EXPECT_NE(ranged.find("no-such/key.bin"), std::string::npos) << ranged;
}

TEST_P(StoreTest, Remove) {
  put("doomed/a", "x");
  put("kept", "y");
  store_->remove("doomed/a");
  EXPECT_FALSE(store_->head("doomed/a").has_value());
  EXPECT_NE(error_of([&] { store_->get("doomed/a"); }), "no error");
  EXPECT_EQ(keys(""), std::vector<std::string>{"kept"});
  EXPECT_NO_THROW(store_->remove("doomed/a"));
  EXPECT_NO_THROW(store_->remove("never/was/here"));
}

TEST_P(StoreTest, ListByPrefixSorted) {
  const std::vector<std::string> all{"alpha/beta",
                                     "ckpt-other",
                                     "ckpt/000002/manifest.json",
                                     "ckpt/000002/shard-0",
                                     "ckpt/000010/manifest.json",
                                     "ckpt/000010/shard-1",
                                     "zeta"};
  for (auto it = all.rbegin(); it != all.rend(); ++it) put(*it, *it + "!");
  EXPECT_EQ(keys(""), all);
  EXPECT_EQ(keys("ckpt/"), std::vector<std::string>(all.begin() + 2, all.begin() + 6));
  EXPECT_EQ(keys("ckpt"), std::vector<std::string>(all.begin() + 1, all.begin() + 6));
  EXPECT_EQ(keys("ckpt/000010/"), std::vector<std::string>(all.begin() + 4, all.begin() + 6));
  EXPECT_TRUE(keys("nope/").empty());
  for (const auto& o : store_->list("")) EXPECT_EQ(o.size, o.key.size() + 1) << o.key;
}

TEST_P(StoreTest, ListPagesPastAThousandKeys) {
  constexpr size_t kCount = 1100;  // S3 pages hold 1000 keys
  std::vector<std::string> want(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "many/%05zu", i);
    want[i] = name;
  }
  parallel_for(kCount, 16, [&](size_t i) { put(want[i], std::to_string(i)); });
  EXPECT_EQ(keys("many/"), want);
  EXPECT_EQ(store_->list("").size(), kCount);
}

TEST_P(StoreTest, PutIfAbsent) {
  const std::string first = "written first", second = "written second";
  EXPECT_TRUE(store_->put_if_absent("lock", first.data(), first.size()));
  EXPECT_FALSE(store_->put_if_absent("lock", second.data(), second.size()));
  EXPECT_EQ(store_->get("lock"), first);
}

TEST_P(StoreTest, MultipartWithParallelParts) {
  auto big = reopen([](S3Options& o) {
    o.part_size = 5 << 20;  // S3's smallest part
    o.parallel_parts = 4;
  });
  const std::string data = random_bytes((23 << 20) + 12345, 42);
  const auto start = std::chrono::steady_clock::now();
  big->put("shards/big.bin", data.data(), data.size());
  const double up = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string back = big->get("shards/big.bin");
  const double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ multipart ] %s: 23 MiB up in %.2fs, round trip %.2fs\n", GetParam().c_str(), up,
              total);
  RecordProperty("upload_seconds", std::to_string(up));
  EXPECT_TRUE(back == data) << "the object read back differs from the one written";
  EXPECT_EQ(big->head("shards/big.bin")->size, data.size());
  const uint64_t seam = (5 << 20) - 10;  // across the first part boundary
  EXPECT_TRUE(big->get_range("shards/big.bin", seam, 20) == data.substr(seam, 20));

  // Create-if-absent holds for objects that go up in parts too.
  EXPECT_TRUE(big->put_if_absent("shards/once.bin", data.data(), 11 << 20));
  EXPECT_FALSE(big->put_if_absent("shards/once.bin", data.data() + 1, 11 << 20));
  EXPECT_TRUE(big->get("shards/once.bin") == data.substr(0, 11 << 20));
}

TEST_P(StoreTest, BinaryDataWithZeroBytes) {
  std::string data(3, '\0');
  for (int r = 0; r < 4; ++r)
    for (int b = 0; b < 256; ++b) data += static_cast<char>(b);
  data += std::string(5, '\0');
  put("binary.bin", data);
  EXPECT_TRUE(store_->get("binary.bin") == data);
  EXPECT_EQ(store_->head("binary.bin")->size, data.size());
  EXPECT_TRUE(store_->get_range("binary.bin", 1, 300) == data.substr(1, 300));
}

TEST_P(StoreTest, KeysWithSpacesAndSpecialCharacters) {
  std::vector<std::string> names{"with space/file name.bin",
                                 "plus+equals=amp&.txt",
                                 "percent%2Fliteral%",
                                 "unicode/gr\xc3\xb6\xc3\x9f"
                                 "e-\xe6\x97\xa5\xe6\x9c\xac.txt",
                                 "tilde~star*quote'paren(1)!",
                                 "semi;colon:comma,at@dollar$",
                                 "question?hash#brackets[]{}",
                                 "caret^pipe|back\\slash<angle>\"quote\"",
                                 "trailing space "};
  for (const auto& k : names) put(k, "content of " + k);
  for (const auto& k : names) {
    EXPECT_EQ(store_->get(k), "content of " + k) << k;
    ASSERT_TRUE(store_->head(k).has_value()) << k;
    EXPECT_EQ(store_->head(k)->size, k.size() + 11) << k;
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(keys(""), names);
  EXPECT_EQ(keys("with space/"), std::vector<std::string>{"with space/file name.bin"});
}

TEST_P(StoreTest, InvalidKeysAreRejected) {
  for (const std::string key : {"", "/absolute", "a/../b"}) {
    EXPECT_NE(error_of([&] { put(key, "x"); }), "no error") << "'" << key << "'";
    EXPECT_NE(error_of([&] { store_->get(key); }), "no error") << "'" << key << "'";
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values("local", "s3"),
                         [](const auto& info) { return info.param; });

// Sets environment variables for one test, and puts the old values back.
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const char* name : kAll) {
      const char* v = std::getenv(name);
      saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(name);
    }
    for (const auto& [name, value] : vars) ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_)
      value ? ::setenv(name, value->c_str(), 1) : ::unsetenv(name);
  }

 private:
  static constexpr const char* kAll[] = {
      "AWS_ENDPOINT_URL",   "AWS_ENDPOINT_URL_S3", "AWS_REGION",
      "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",   "AWS_SECRET_ACCESS_KEY",
      "AWS_SESSION_TOKEN",  "TERN_S3_PATH_STYLE",  "AWS_S3_FORCE_PATH_STYLE"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

TEST(S3Options, FromTheEnvironment) {
  {
    ScopedEnv e({});
    const S3Options o = S3Options::from_env("b", "p/q");
    EXPECT_EQ(o.bucket, "b");
    EXPECT_EQ(o.prefix, "p/q");
    EXPECT_EQ(o.endpoint, "");
    EXPECT_EQ(o.region, "us-east-1");
    EXPECT_FALSE(o.path_style) << "virtual hosts on AWS";
    EXPECT_EQ(o.access_key, "");
  }
  {
    ScopedEnv e({{"AWS_ENDPOINT_URL", "http://general:1"},
                 {"AWS_DEFAULT_REGION", "eu-west-1"},
                 {"AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"},
                 {"AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"},
                 {"AWS_SESSION_TOKEN", "token"}});
    const S3Options o = S3Options::from_env("b", "");
    EXPECT_EQ(o.endpoint, "http://general:1");
    EXPECT_EQ(o.region, "eu-west-1");
    EXPECT_TRUE(o.path_style) << "a custom endpoint";
    EXPECT_EQ(o.access_key, "AKIDEXAMPLE");
    EXPECT_EQ(o.secret_key, "wJalrXUtnFEMI");
    EXPECT_EQ(o.session_token, "token");
  }
  {
    ScopedEnv e({{"AWS_ENDPOINT_URL", "http://general:1"},
                 {"AWS_ENDPOINT_URL_S3", "http://s3-only:2"},
                 {"AWS_REGION", "ap-south-1"},
                 {"AWS_DEFAULT_REGION", "eu-west-1"},
                 {"TERN_S3_PATH_STYLE", "0"}});
    const S3Options o = S3Options::from_env("b", "");
    EXPECT_EQ(o.endpoint, "http://s3-only:2");
    EXPECT_EQ(o.region, "ap-south-1");
    EXPECT_FALSE(o.path_style) << "TERN_S3_PATH_STYLE=0 asks for virtual hosts";
  }
  {
    ScopedEnv e({{"AWS_S3_FORCE_PATH_STYLE", "true"}});
    EXPECT_TRUE(S3Options::from_env("b", "").path_style);
  }
  {
    ScopedEnv e({{"TERN_S3_PATH_STYLE", "1"}});
    EXPECT_TRUE(S3Options::from_env("b", "").path_style);
  }
}

constexpr const char* kAccessKey = "AKIATERNNEVERSHOWN01";
constexpr const char* kSecretKey = "tern/NeverShown+Secret=0123456789abcdefghij";

// Nothing listens on port 1: every attempt is refused, until the retry budget is spent.
TEST(S3Store, GivesUpWhenTheRetryBudgetIsSpent) {
  S3Options o;
  o.bucket = "tern-test";
  o.prefix = "pre";
  o.endpoint = "http://127.0.0.1:1";
  o.path_style = true;
  o.access_key = kAccessKey;
  o.secret_key = kSecretKey;
  o.max_retry_seconds = 0.5;
  auto store = open_s3_store(o);
  LogCapture log;
  const auto start = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { store->get("some/key"); });
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(msg.find("get s3://tern-test/pre/some/key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("connect"), std::string::npos) << msg;
  EXPECT_NE(msg.find("attempts"), std::string::npos) << msg;
  EXPECT_LT(took, 5.0);
  const std::string logged = log.text();
  EXPECT_NE(logged.find("retrying"), std::string::npos) << logged;
  for (const std::string& text : {msg, logged}) {
    EXPECT_EQ(text.find(kAccessKey), std::string::npos) << text;
    EXPECT_EQ(text.find(kSecretKey), std::string::npos) << text;
  }
}

// Against the S3 server of store_s3_moto, which injects faults on request (s3_server.py).
class S3Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string uri = env("TERN_TEST_S3_URI");
    endpoint_ =
        env("AWS_ENDPOINT_URL_S3").empty() ? env("AWS_ENDPOINT_URL") : env("AWS_ENDPOINT_URL_S3");
    if (uri.empty() || env("TERN_TEST_S3_FAULTS") != "1")
      GTEST_SKIP() << "needs TERN_TEST_S3_URI and TERN_TEST_S3_FAULTS=1 (store_s3_moto sets both)";
    options_ = s3_options(uri, test_slug());
    options_.max_retry_seconds = 1;
    store_ = open_s3_store(options_);
  }
  void TearDown() override {
    if (!store_) return;
    control("DELETE", "");
    for (const auto& o : store_->list("")) store_->remove(o.key);
  }

  // The next `count` requests whose path holds this test's prefix (and `match`) fail so.
  void inject(int status, const std::string& code, int count, const std::string& match = "",
              const std::string& method = "") {
    std::string spec = "{\"status\": " + std::to_string(status) + ", \"code\": \"" + code +
                       "\", \"count\": " + std::to_string(count) + ", \"match\": \"" +
                       options_.prefix + "/" + match + "\"";
    if (!method.empty()) spec += ", \"method\": \"" + method + "\"";
    control("POST", spec + "}");
  }

  void control(const char* method, const std::string& body) {
    CURL* h = curl_easy_init();
    ASSERT_NE(h, nullptr);
    const std::string url = endpoint_ + "/__tern/faults";
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(
        h, CURLOPT_WRITEFUNCTION, +[](char*, size_t, size_t n, void*) -> size_t { return n; });
    long status = 0;
    const CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    ASSERT_EQ(rc, CURLE_OK) << curl_easy_strerror(rc);
    ASSERT_EQ(status, 200);
  }

  std::string endpoint_;
  S3Options options_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_F(S3Faults, SlowDownIsRetried) {
  inject(503, "SlowDown", 3);
  LogCapture log;
  store_->put("k", "v", 1);
  EXPECT_EQ(store_->get("k"), "v");
  const std::string logged = log.text();
  size_t lines = 0;
  for (size_t at = 0; (at = logged.find("HTTP 503 SlowDown", at)) != std::string::npos; ++at)
    ++lines;
  EXPECT_EQ(lines, 3u) << logged;
  EXPECT_NE(logged.find("put s3://"), std::string::npos) << logged;
}

TEST_F(S3Faults, ServerErrorsFailOnceTheBudgetIsSpent) {
  inject(500, "InternalError", 100000);
  const auto start = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { store_->put("k", "v", 1); });
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(msg.find("put s3://"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/k: HTTP 500 InternalError"), std::string::npos) << msg;
  EXPECT_GE(took, 0.9);
  EXPECT_LT(took, 5.0);
}

TEST_F(S3Faults, ClientErrorsAreNotRetried) {
  inject(403, "AccessDenied", 1);
  LogCapture log;
  const std::string msg = error_of([&] { store_->get("k"); });
  EXPECT_NE(msg.find("HTTP 403 AccessDenied"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(1 attempt in"), std::string::npos) << msg;
  EXPECT_EQ(log.text(), "");
}

TEST_F(S3Faults, ConditionalConflictEndsAsAbsentFalse) {
  inject(409, "ConditionalRequestConflict", 100000, "", "PUT");
  EXPECT_FALSE(store_->put_if_absent("lock", "x", 1));
}

TEST_F(S3Faults, FailedPartAbortsTheUpload) {
  S3Options o = options_;
  o.part_size = 5 << 20;
  auto big = open_s3_store(o);
  inject(500, "InternalError", 100000, "big.bin?partNumber=2", "PUT");
  const std::string data = random_bytes(12 << 20, 3);
  const std::string msg = error_of([&] { big->put("big.bin", data.data(), data.size()); });
  EXPECT_NE(msg.find("part 2"), std::string::npos) << msg;
  EXPECT_FALSE(big->head("big.bin").has_value());
}

TEST_F(S3Faults, CredentialsNeverShow) {
  S3Options o = options_;
  o.access_key = kAccessKey;
  o.secret_key = kSecretKey;
  o.session_token = "tern-session-token-never-shown";
  auto store = open_s3_store(o);
  S3Options nob = o;
  nob.bucket = "tern-no-such-bucket";
  auto nowhere = open_s3_store(nob);
  LogCapture log;
  inject(503, "SlowDown", 2);
  std::vector<std::string> texts{
      error_of([&] { store->get("missing"); }), error_of([&] { nowhere->put("k", "v", 1); }),
      error_of([&] { nowhere->list(""); }), error_of([&] { nowhere->get_range("k", 0, 1); })};
  texts.push_back(log.text());
  for (const auto& text : texts) {
    for (const std::string& secret : {o.access_key, o.secret_key, o.session_token})
      EXPECT_EQ(text.find(secret), std::string::npos) << text;
  }
  EXPECT_NE(texts[1].find("tern-no-such-bucket"), std::string::npos) << texts[1];
}

}  // namespace
}  // namespace tern
