#include <curl/curl.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <memory>
#include <mutex>
#include <pugixml.hpp>
#include <random>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>

#include "tern/base/version.h"
#include "tern/io/store.h"

namespace tern {
namespace {

constexpr uint64_t kMinPartSize = 5ull << 20;  // S3's floor for every part but the last
constexpr uint64_t kMaxParts = 10000;          // S3's ceiling on parts per upload
constexpr double kFirstBackoff = 0.1;          // seconds; doubles per attempt, before jitter
constexpr double kMaxBackoff = 10;

std::string env_or(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// RFC 3986 with upper-case hex, which is also SigV4's canonical form: the URL we send is the one
// libcurl signs, byte for byte.
std::string uri_encode(std::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (const unsigned char c : s) {
    if (unreserved(c) || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Keys in an encoding-type=url listing are form-encoded: '+' stands for a space.
std::string form_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// A canonical SigV4 query: names sorted, every name with '='. libcurl 7.88 signs the query as
// sent (the sorting came in 8.x), so it has to be canonical already.
std::string canonical_query(std::vector<std::pair<std::string, std::string>> params) {
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [name, value] : params) {
    if (!out.empty()) out += '&';
    out += uri_encode(name, false) + "=" + uri_encode(value, false);
  }
  return out;
}

std::string sha256_hex(const void* data, size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data, size, md, &len, EVP_sha256(), nullptr) != 1)
    throw StoreError("SHA-256 of a request body failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

// "2024-05-01T12:34:56.000Z", as listings give it.
int64_t parse_iso8601(const char* s) {
  std::tm tm{};
  if (std::sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec) != 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm));
}

struct Request {
  Request(const char* m, std::string k, std::string q = {})
      : method(m), key(std::move(k)), query(std::move(q)) {}
  Request& with_body(const void* data, size_t n) {
    body = static_cast<const char*>(data);
    size = n;
    return *this;
  }

  const char* method;
  std::string key;  // the key within the bucket, prefix included; empty: the bucket itself
  std::string query;
  std::vector<std::string> headers;
  const char* body = nullptr;
  size_t size = 0;
  std::string content_type = "application/octet-stream";
  bool error_in_ok = false;  // CompleteMultipartUpload can answer 200 with an <Error> body
};

struct Reply {
  long status = 0;  // 0: no HTTP reply; `curl` says why
  CURLcode curl = CURLE_OK;
  std::string curl_error;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string code, message;                                 // from an S3 <Error> body
  int attempts = 0;
  double seconds = 0;

  std::string header(std::string_view name) const {
    for (const auto& [n, v] : headers)
      if (n == name) return v;
    return {};
  }
};

size_t on_body(char* p, size_t, size_t n, void* reply) {
  static_cast<Reply*>(reply)->body.append(p, n);
  return n;
}

size_t on_header(char* p, size_t, size_t n, void* reply) {
  auto* r = static_cast<Reply*>(reply);
  std::string_view line(p, n);
  // Each response (a "100 Continue" comes first on large uploads) starts over.
  if (line.rfind("HTTP/", 0) == 0) r->headers.clear();
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back())))
    value.remove_suffix(1);
  r->headers.emplace_back(std::move(name), std::string(value));
  return n;
}

struct HeaderList {
  curl_slist* list = nullptr;
  HeaderList() = default;
  HeaderList(const HeaderList&) = delete;
  ~HeaderList() { curl_slist_free_all(list); }
  void add(const std::string& line) {
    curl_slist* head = curl_slist_append(list, line.c_str());
    if (!head) throw std::bad_alloc();
    list = head;
  }
};

// One easy handle per thread, kept between calls so that connections are reused; a handle must
// never be used by two threads at once.
CURL* thread_easy() {
  struct Easy {
    CURL* h = curl_easy_init();
    ~Easy() { curl_easy_cleanup(h); }
  };
  thread_local Easy easy;
  if (!easy.h) throw StoreError("S3: curl_easy_init failed");
  return easy.h;
}

// Worth another try: the network, the server's own errors, and its requests to slow down. Other
// client errors would fail the same way again.
bool transient(const Reply& r, long also) {
  if (r.status == 0) {
    switch (r.curl) {
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_CONNECT:
      case CURLE_OPERATION_TIMEDOUT:
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_HTTP2:
      case CURLE_HTTP2_STREAM:
      case CURLE_WEIRD_SERVER_REPLY:
        return true;
      default:
        return false;
    }
  }
  // 501: the server lacks a feature (If-None-Match on some S3 clones), which waiting won't bring.
  return (r.status >= 500 && r.status != 501) || r.status == 429 || r.status == also ||
         (r.status == 400 && r.code == "RequestTimeout");
}

class S3Store final : public ObjectStore {
 public:
  explicit S3Store(S3Options o) : o_(std::move(o)) {
    static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (init != CURLE_OK) throw StoreError("S3: curl_global_init failed");
    if (o_.bucket.empty()) throw StoreError("S3 store: no bucket");
    if (o_.region.empty()) o_.region = "us-east-1";
    o_.parallel_parts = std::max(1, o_.parallel_parts);
    std::string endpoint =
        o_.endpoint.empty() ? "https://s3." + o_.region + ".amazonaws.com" : o_.endpoint;
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    const auto scheme = endpoint.find("://");
    if (scheme == std::string::npos)
      throw StoreError("S3 endpoint '" + endpoint + "' lacks a scheme (http:// or https://)");
    // A dotted bucket name breaks the TLS wildcard certificate of a virtual host.
    path_style_ = o_.path_style || o_.bucket.find('.') != std::string::npos;
    base_ = path_style_
                ? endpoint + "/" + uri_encode(o_.bucket, false)
                : endpoint.substr(0, scheme + 3) + o_.bucket + "." + endpoint.substr(scheme + 3);
    sigv4_ = "aws:amz:" + o_.region + ":s3";
    user_agent_ = std::string("tern/") + version_string();
    user_agent_ = user_agent_.substr(0, user_agent_.find(' '));
  }

  std::string uri() const override {
    return "s3://" + o_.bucket + (o_.prefix.empty() ? "" : "/" + o_.prefix);
  }

  void put(const std::string& key, const void* data, size_t size) override {
    write("put", key, data, size, false);
  }

  bool put_if_absent(const std::string& key, const void* data, size_t size) override {
    return write("put_if_absent", key, data, size, true);
  }

  std::string get(const std::string& key) override {
    Reply r = send("get", key, Request("GET", full(key)));
    if (r.status == 200) return std::move(r.body);
    throw error("get", key, r);
  }

  std::string get_range(const std::string& key, uint64_t offset, uint64_t length) override {
    if (length == 0) return {};
    Request req("GET", full(key));
    req.headers.push_back("Range: bytes=" + std::to_string(offset) + "-" +
                          std::to_string(offset + length - 1));
    Reply r = send("get_range", key, req);
    if (r.status == 206) return std::move(r.body);
    // A server that ignores Range sends it all.
    if (r.status == 200) return r.body.substr(std::min<uint64_t>(offset, r.body.size()), length);
    // Starting at or past the end: a short read, as from a file.
    if (r.status == 416) return {};
    throw error("get_range", key, r);
  }

  std::optional<ObjectInfo> head(const std::string& key) override {
    Reply r = send("head", key, Request("HEAD", full(key)));
    if (r.status == 404) return std::nullopt;
    if (r.status != 200) throw error("head", key, r);
    const std::string modified = r.header("last-modified");
    return ObjectInfo{key, std::strtoull(r.header("content-length").c_str(), nullptr, 10),
                      static_cast<int64_t>(curl_getdate(modified.c_str(), nullptr))};
  }

  std::vector<ObjectInfo> list(const std::string& prefix) override {
    const std::string root = o_.prefix.empty() ? "" : o_.prefix + "/";
    std::vector<ObjectInfo> out;
    std::string token;
    do {
      // encoding-type=url: a key may hold characters that XML 1.0 cannot carry.
      std::vector<std::pair<std::string, std::string>> params{
          {"encoding-type", "url"}, {"list-type", "2"}, {"prefix", root + prefix}};
      if (!token.empty()) params.emplace_back("continuation-token", token);
      Reply r = send("list", prefix, Request("GET", "", canonical_query(params)));
      if (r.status != 200) throw error("list", prefix, r);
      pugi::xml_document doc;
      if (!doc.load_buffer(r.body.data(), r.body.size()))
        throw StoreError(redact("list " + where(prefix) + ": unreadable ListObjectsV2 reply"));
      const pugi::xml_node result = doc.child("ListBucketResult");
      for (const pugi::xml_node c : result.children("Contents")) {
        const std::string key = form_decode(c.child_value("Key"));
        if (key.compare(0, root.size(), root) != 0) continue;
        out.push_back({key.substr(root.size()), c.child("Size").text().as_ullong(),
                       parse_iso8601(c.child_value("LastModified"))});
      }
      const bool more = result.child("IsTruncated").text().as_bool();
      token = more ? result.child_value("NextContinuationToken") : "";
      if (more && token.empty())
        throw StoreError(redact("list " + where(prefix) + ": truncated reply without a token"));
    } while (!token.empty());
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
    return out;
  }

  void remove(const std::string& key) override {
    Reply r = send("remove", key, Request("DELETE", full(key)));
    if (r.status == 204 || r.status == 200 || r.status == 404) return;
    throw error("remove", key, r);
  }

 private:
  // The same keys as the local store accepts, so that code above runs unchanged on both.
  std::string full(const std::string& key) const {
    if (key.empty() || key.front() == '/' || key.find("..") != std::string::npos)
      throw StoreError("invalid object key '" + key + "'");
    return o_.prefix.empty() ? key : o_.prefix + "/" + key;
  }
  std::string where(const std::string& key) const { return uri() + "/" + key; }

  // Credentials never reach a message, not even from an error body that echoes them.
  std::string redact(std::string text) const {
    for (const std::string* secret : {&o_.secret_key, &o_.session_token, &o_.access_key}) {
      if (secret->empty()) continue;
      for (size_t at; (at = text.find(*secret)) != std::string::npos;)
        text.replace(at, secret->size(), "<redacted>");
    }
    return text;
  }

  static std::string describe(const Reply& r) {
    if (r.status == 0) return std::string(curl_easy_strerror(r.curl)) + " (" + r.curl_error + ")";
    std::string s = "HTTP " + std::to_string(r.status);
    if (!r.code.empty()) s += " " + r.code;
    if (!r.message.empty()) s += ": " + r.message;
    return s;
  }

  StoreError error(const std::string& op, const std::string& key, const Reply& r) const {
    char took[64];
    std::snprintf(took, sizeof took, " (%d attempt%s in %.1fs)", r.attempts,
                  r.attempts == 1 ? "" : "s", r.seconds);
    return StoreError(redact(op + " " + where(key) + ": " + describe(r) + took));
  }

  // One HTTP exchange, signed by libcurl. libcurl 7.88 does not send x-amz-content-sha256, which
  // S3 requires; given the header, it signs it and takes its value as the payload hash.
  Reply perform(const Request& q, const std::string& payload_hash) const {
    Reply r;
    CURL* h = thread_easy();
    HeaderList headers;
    headers.add("x-amz-content-sha256: " + payload_hash);
    if (!o_.session_token.empty()) headers.add("x-amz-security-token: " + o_.session_token);
    for (const auto& line : q.headers) headers.add(line);
    const bool has_body =
        std::string_view(q.method) == "PUT" || std::string_view(q.method) == "POST";
    if (has_body) headers.add("Content-Type: " + q.content_type);

    const std::string url = base_ +
                            (q.key.empty() && path_style_ ? "" : "/" + uri_encode(q.key, true)) +
                            (q.query.empty() ? "" : "?" + q.query);
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);  // a key is a name, not a path to normalize
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.list);
    curl_easy_setopt(h, CURLOPT_USERAGENT, user_agent_.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    // curl sends "Expect: 100-continue" with bodies over 1 MiB and then waits up to a second for
    // the interim reply, which some S3-compatible servers never send; a part must not wait.
    curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min(10.0, o_.request_timeout_seconds) * 1000));
    // A stall, not a total: a big part on a slow link may take long but must keep moving.
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                     std::max(1L, static_cast<long>(std::ceil(o_.request_timeout_seconds))));
    if (!o_.access_key.empty()) {  // no credentials: anonymous requests, as for a public bucket
      curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4_.c_str());
      curl_easy_setopt(h, CURLOPT_USERNAME, o_.access_key.c_str());
      curl_easy_setopt(h, CURLOPT_PASSWORD, o_.secret_key.c_str());
    }
    if (has_body) {
      // In-memory fields, so that libcurl can resend them itself on a reused connection.
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, q.body ? q.body : "");
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(q.size));
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q.method);
    } else if (std::string_view(q.method) == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (std::string_view(q.method) != "GET") {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q.method);
    }
    r.curl = curl_easy_perform(h);
    if (r.curl == CURLE_OK)
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    else
      r.curl_error = errbuf;
    curl_easy_reset(h);  // drops the pointers to this frame; keeps the connections

    if ((r.status >= 300 || (r.status == 200 && q.error_in_ok)) && !r.body.empty()) {
      pugi::xml_document doc;
      if (doc.load_buffer(r.body.data(), r.body.size())) {
        const pugi::xml_node e = doc.child("Error");
        r.code = e.child_value("Code");
        r.message = e.child_value("Message");
        if (e && r.status == 200) r.status = 500;  // S3 says to treat it as a server error
      }
    }
    return r;
  }

  // `q` with retries: exponential backoff with full jitter, while the total time stays within
  // max_retry_seconds. Returns the last reply; callers decide what its status means.
  Reply send(const char* op, const std::string& key, const Request& q, long also_retry = 0) const {
    const std::string hash = sha256_hex(q.body ? q.body : "", q.size);
    const auto start = std::chrono::steady_clock::now();
    thread_local std::mt19937_64 rng{std::random_device{}()};
    for (int attempt = 1;; ++attempt) {
      Reply r = perform(q, hash);
      r.attempts = attempt;
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double left = o_.max_retry_seconds - r.seconds;
      if (!transient(r, also_retry) || left <= 0) return r;
      const double cap = std::min(kMaxBackoff, kFirstBackoff * std::ldexp(1.0, attempt - 1));
      const double delay = std::min(left, std::uniform_real_distribution<double>(0, cap)(rng));
      spdlog::warn("S3 {} {}: {}; attempt {} failed, retrying in {:.2f}s", op, redact(where(key)),
                   redact(describe(r)), attempt, delay);
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    }
  }

  static bool precondition_failed(const Reply& r) {
    return r.status == 412 || (r.status == 409 && r.code == "ConditionalRequestConflict");
  }

  bool write(const char* op, const std::string& key, const void* data, size_t size,
             bool if_absent) {
    if (size > o_.part_size) return write_parts(op, key, data, size, if_absent);
    Request q("PUT", full(key));
    q.with_body(data, size);
    if (if_absent) q.headers.push_back("If-None-Match: *");
    Reply r = send(op, key, q, if_absent ? 409 : 0);
    if (r.status == 200) return true;
    if (if_absent && precondition_failed(r)) return false;
    throw error(op, key, r);
  }

  // Multipart upload: parts go up from parallel_parts threads (each with its own easy handle);
  // any failure aborts the upload so that no parts are left behind to pay for.
  bool write_parts(const char* op, const std::string& key, const void* data, size_t size,
                   bool if_absent) {
    const uint64_t part =
        std::max({o_.part_size, kMinPartSize, (size + kMaxParts - 1) / kMaxParts});
    const size_t count = (size + part - 1) / part;
    Request create("POST", full(key), canonical_query({{"uploads", ""}}));
    Reply r = send(op, key, create);
    if (r.status != 200) throw error(std::string(op) + " (CreateMultipartUpload)", key, r);
    pugi::xml_document doc;
    doc.load_buffer(r.body.data(), r.body.size());
    const std::string id = doc.child("InitiateMultipartUploadResult").child_value("UploadId");
    if (id.empty()) throw StoreError(redact(std::string(op) + " " + where(key) + ": no UploadId"));
    const std::string upload = canonical_query({{"uploadId", id}});
    try {
      std::vector<std::string> etags(count);
      std::atomic<size_t> next{0};
      std::atomic<bool> failed{false};
      std::exception_ptr first_error;
      std::mutex mu;
      auto worker = [&] {
        try {
          for (size_t i; !failed && (i = next++) < count;) {
            const uint64_t offset = i * part;
            Request q("PUT", full(key),
                      canonical_query({{"partNumber", std::to_string(i + 1)}, {"uploadId", id}}));
            q.with_body(static_cast<const char*>(data) + offset,
                        std::min<uint64_t>(part, size - offset));
            Reply pr = send(op, key, q);
            etags[i] = pr.header("etag");
            if (pr.status != 200 || etags[i].empty())
              throw error(std::string(op) + " (part " + std::to_string(i + 1) + ")", key, pr);
          }
        } catch (...) {
          std::lock_guard lock(mu);
          if (!first_error) first_error = std::current_exception();
          failed = true;
        }
      };
      {
        std::vector<std::jthread> pool;
        const size_t threads = std::min<size_t>(count, o_.parallel_parts);
        for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
        worker();
      }
      if (first_error) std::rethrow_exception(first_error);

      pugi::xml_document body;
      pugi::xml_node root = body.append_child("CompleteMultipartUpload");
      for (size_t i = 0; i < count; ++i) {
        pugi::xml_node p = root.append_child("Part");
        p.append_child("PartNumber").text().set(static_cast<unsigned long long>(i + 1));
        p.append_child("ETag").text().set(etags[i].c_str());
      }
      std::ostringstream xml;
      body.save(xml, "", pugi::format_raw);
      const std::string text = xml.str();
      Request done("POST", full(key), upload);
      done.with_body(text.data(), text.size());
      done.content_type = "application/xml";
      done.error_in_ok = true;
      if (if_absent) done.headers.push_back("If-None-Match: *");
      r = send(op, key, done, if_absent ? 409 : 0);
      if (r.status == 200) return true;
      // A retried Complete whose earlier try landed finds the upload gone and the object there.
      if (r.status == 404 && r.code == "NoSuchUpload" && r.attempts > 1) {
        const auto info = head(key);
        if (info && info->size == size) return true;
      }
      if (!(if_absent && precondition_failed(r)))
        throw error(std::string(op) + " (CompleteMultipartUpload)", key, r);
    } catch (...) {
      abort_upload(op, key, upload);
      throw;
    }
    abort_upload(op, key, upload);
    return false;
  }

  void abort_upload(const char* op, const std::string& key, const std::string& upload) const {
    try {
      Reply r = send(op, key, Request("DELETE", full(key), upload));
      if (r.status == 204 || r.status == 200 || r.status == 404) return;
      spdlog::warn("S3 {}: could not abort the multipart upload: {}", redact(where(key)),
                   redact(describe(r)));
    } catch (const std::exception& e) {
      spdlog::warn("S3 {}: could not abort the multipart upload: {}", redact(where(key)), e.what());
    }
  }

  S3Options o_;
  bool path_style_ = false;
  std::string base_;  // scheme://host[/bucket], without a trailing '/'
  std::string sigv4_, user_agent_;
};

}  // namespace

S3Options S3Options::from_env(const std::string& bucket, const std::string& prefix) {
  S3Options o;
  o.bucket = bucket;
  o.prefix = prefix;
  o.endpoint = env_or("AWS_ENDPOINT_URL_S3", env_or("AWS_ENDPOINT_URL"));
  o.region = env_or("AWS_REGION", env_or("AWS_DEFAULT_REGION", "us-east-1"));
  o.access_key = env_or("AWS_ACCESS_KEY_ID");
  o.secret_key = env_or("AWS_SECRET_ACCESS_KEY");
  o.session_token = env_or("AWS_SESSION_TOKEN");
  // Custom endpoints (MinIO, moto, Ceph) rarely have wildcard DNS; TERN_S3_PATH_STYLE=0 still
  // asks for virtual hosts there.
  const std::string tern_style = env_or("TERN_S3_PATH_STYLE");
  o.path_style = tern_style.empty()
                     ? !o.endpoint.empty() || env_or("AWS_S3_FORCE_PATH_STYLE") == "true"
                     : tern_style == "1";
  return o;
}

std::unique_ptr<ObjectStore> open_s3_store(const S3Options& options) {
  return std::make_unique<S3Store>(options);
}

}  // namespace tern
