// The server's threads together, over real sockets: HTTP I/O threads, the batcher's workers and the
// repository's poller, with clients on threads of their own sending keep-alive requests while
// versions are swapped under them and the server then drains. launch/test.sh also runs this under
// ThreadSanitizer (the debug-tsan preset), which is what finds the races here; on its own it checks
// that every request is answered correctly by one of the versions.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fake_model.h"
#include "temp_dir.h"
#include "tern/serve/router.h"
#include "tern/serve/server.h"

namespace tern::serve {
namespace {

using json = nlohmann::json;

// A minimal HTTP/1.1 client on one keep-alive connection (Content-Length bodies only, which is
// all tern-serve sends).
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    int one = 1;
    if (ok_) ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Status and body; status 0 when the connection failed or closed.
  std::pair<int, std::string> post(const std::string& target, const std::string& body) {
    const std::string req = "POST " + target +
                            " HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                            "Content-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    if (!ok_ || !send_all(req)) return {0, ""};
    size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return {0, ""};
    const std::string head = buf_.substr(0, head_end);
    int status = 0;
    std::sscanf(head.c_str(), "HTTP/1.1 %d", &status);
    size_t length = 0;
    const auto cl = head.find("Content-Length: ");
    if (cl != std::string::npos) length = std::stoul(head.substr(cl + 16));
    while (buf_.size() < head_end + 4 + length)
      if (!fill()) return {0, ""};
    std::string out = buf_.substr(head_end + 4, length);
    buf_.erase(0, head_end + 4 + length);
    return {status, out};
  }

 private:
  bool send_all(const std::string& s) {
    for (size_t off = 0; off < s.size();) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  bool fill() {
    char chunk[4096];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  bool ok_ = false;
  std::string buf_;
};

class ServerThreads : public ::testing::Test {
 protected:
  void write(const std::string& key, const std::string& text) { dir_.write(key, text); }
  tern::testing::TempDir dir_{"tern-serve-threads"};
  const std::string root_ = dir_.path();
};

TEST_F(ServerThreads, ConcurrentClientsThroughHotReloadsAndADrain) {
  // Version v answers sum(row) + 100 v (+ column): every answer names the version that gave it.
  write("m/1/model.h5", "2 2 100");
  write("m/config.ini", "max_batch_size = 8\nmax_queue_delay_microseconds = 200\ncache = true\n");
  StatsRegistry stats;
  ServerCounters counters;
  ResponseCache cache(1 << 20);
  ModelRepository repo({root_, 2, 1, ControlMode::poll, {}}, stats, fake_loader);
  repo.poll(true);
  std::atomic<bool> draining{false};
  HttpServer* server_ptr = nullptr;
  Router router(
      repo, stats, counters, &cache, [&] { return !draining; },
      [&](std::function<void()> fn) { server_ptr->post(std::move(fn)); });
  HttpServerOptions options;
  options.address = "127.0.0.1";
  options.port = 0;
  options.io_threads = 2;
  options.on_status = [&](int status) { counters.count_status(status); };
  HttpServer server(options, [&](HttpRequest&& request, Responder respond) {
    router.handle(std::move(request), std::move(respond));
  });
  server_ptr = &server;
  server.start();
  repo.start_polling(0.02);  // the poller swaps versions while the clients send

  // Each client sends at least kRequests, and goes on until the versions have been swapped twice
  // (at most kMaxRequests: the loops end by themselves).
  constexpr int kClients = 6, kRequests = 150, kMaxRequests = 20000;
  std::atomic<int> ok{0}, wrong{0}, sent{0};
  std::atomic<unsigned> versions_seen{0};  // bit v: an answer came from version v
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      Client client(server.port());
      for (int i = 0; i < kMaxRequests && (i < kRequests || !stop); ++i) {
        // A few distinct rows per client, so the cache both hits and misses.
        const float a = static_cast<float>(c), b = static_cast<float>(i % 5);
        const json body = {
            {"inputs",
             {{{"name", "input"}, {"datatype", "FP32"}, {"shape", {1, 2}}, {"data", {a, b}}}}}};
        auto [status, text] = client.post("/v2/models/m/infer", body.dump());
        bool good = false;
        if (status == 200) {
          const auto out = json::parse(text)["outputs"][0]["data"];
          const double v0 = out[0].get<double>() - a - b, v1 = out[1].get<double>() - a - b;
          // 100, 200 or 300: the answer of one whole version, column 1 one more than column 0.
          good = (v0 == 100 || v0 == 200 || v0 == 300) && v1 == v0 + 1;
          if (good) versions_seen |= 1u << static_cast<int>(v0 / 100);
        }
        (good ? ok : wrong)++;
        ++sent;
      }
    });
  // Hot reloads under load: a new version, then another, each swapped in by the poller once it
  // is answering.
  auto wait_for_version = [&](int v) {
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (!(versions_seen & (1u << v)) && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return (versions_seen & (1u << v)) != 0;
  };
  EXPECT_TRUE(wait_for_version(1));
  write("m/2/model.h5", "2 2 200");
  EXPECT_TRUE(wait_for_version(2)) << "version 2 was not swapped in under load";
  write("m/3/model.h5", "2 2 300");
  EXPECT_TRUE(wait_for_version(3)) << "version 3 was not swapped in under load";
  stop = true;
  for (auto& t : clients) t.join();

  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(ok.load(), sent.load());
  EXPECT_GE(sent.load(), kClients * kRequests);
  // Drain with requests still coming on one connection: answered, then the connection closes.
  std::thread late([&] {
    Client client(server.port());
    const json body = {
        {"inputs",
         {{{"name", "input"}, {"datatype", "FP32"}, {"shape", {1, 2}}, {"data", {1, 1}}}}}};
    for (int i = 0; i < 50 && client.post("/v2/models/m/infer", body.dump()).first == 200; ++i) {
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  draining = true;
  EXPECT_TRUE(server.drain(5));
  late.join();
  repo.stop();
  server.stop();
}

}  // namespace
}  // namespace tern::serve
