#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tern/base/clock.h"

// An HTTP/1.1 server on Boost.Beast/Asio: a few I/O threads serve many keep-alive connections,
// and a handler answers each request through a Responder it may call later from any thread
// (inference answers from a worker). Beast stays behind this header, so the routing code and
// its tests compile without it.
namespace tern::serve {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  Clock::time_point received = Clock::now();  // when the whole request had been read
  // The value of header `name` (case-insensitive).
  std::optional<std::string_view> header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Sends the response; call it exactly once, from any thread.
using Responder = std::function<void(HttpResponse&&)>;
using Handler = std::function<void(HttpRequest&&, Responder)>;

struct HttpServerOptions {
  std::string address = "0.0.0.0";
  uint16_t port = 8000;  // 0: any free port (see HttpServer::port)
  int io_threads = 2;
  size_t max_body_bytes = 64u << 20;
  double idle_timeout_secs = 60;       // a keep-alive connection with no request is closed
  std::function<void(int)> on_status;  // called with the status of every response sent
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts the I/O threads; std::runtime_error naming the address if the
  // port cannot be had.
  void start();
  uint16_t port() const;
  // Runs `fn` on an I/O thread.
  void post(std::function<void()> fn);
  // Graceful shutdown: stops accepting, closes keep-alive connections that wait for a request,
  // and lets requests in progress finish (their connections close after the response). True if
  // every connection ended within `timeout_secs`.
  bool drain(double timeout_secs);
  // Stops the I/O threads; connections still open are dropped.
  void stop();

  struct Impl;  // in http_server.cpp, shared with the connections it serves

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tern::serve
