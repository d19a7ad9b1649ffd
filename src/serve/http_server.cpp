#include "tern/serve/http_server.h"

#include <atomic>
#include <chrono>
#include <list>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "tern/serve/protocol.h"

namespace tern::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

constexpr size_t kHeaderLimit = 64 << 10;
// How long a connection refused mid-body (413) keeps reading, so the client sees the answer
// rather than a reset while it is still sending.
constexpr auto kLingerTime = std::chrono::seconds(3);
// How long a drain keeps answering requests on open keep-alive connections before it closes
// the idle ones.
constexpr double kDrainGraceSecs = 1.0;

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

}  // namespace

std::optional<std::string_view> HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return std::string_view(v);
  return std::nullopt;
}

class Session;

struct HttpServer::Impl {
  HttpServerOptions options;
  Handler handler;
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  tcp::acceptor acceptor{asio::make_strand(ioc)};
  std::vector<std::thread> threads;
  std::atomic<bool> draining{false};
  std::atomic<int> connections{0};
  std::mutex sessions_mu;
  std::list<std::weak_ptr<Session>> sessions;

  void accept(const std::shared_ptr<Impl>& self);
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<HttpServer::Impl> server)
      : stream_(std::move(socket)), server_(std::move(server)) {
    ++server_->connections;
  }
  ~Session() { --server_->connections; }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

  // Drain: a connection waiting for its next request closes now; one busy with a request closes
  // after its response (keep-alive is off once draining).
  void close_if_idle() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->idle_) self->close();
    });
  }

 private:
  void read_header() {
    if (server_->draining && buffer_.size() == 0) return close();
    idle_ = buffer_.size() == 0;
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(server_->options.max_body_bytes);
    stream_.expires_after(seconds(server_->options.idle_timeout_secs));
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, size_t) {
    idle_ = false;
    if (ec) return on_read_error(ec);
    version_ = parser_->get().version();
    keep_alive_ = parser_->get().keep_alive();
    if (parser_->get()[http::field::expect] == "100-continue") {
      // Clients that ask (curl does for large bodies) send the body only after this.
      auto cont =
          std::make_shared<http::response<http::empty_body>>(http::status::continue_, version_);
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code ec, size_t) {
                          if (ec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    stream_.expires_after(seconds(server_->options.idle_timeout_secs));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_body, shared_from_this()));
  }

  void on_body(beast::error_code ec, size_t) {
    if (ec) return on_read_error(ec);
    stream_.expires_never();  // the request may wait in a batching queue
    auto req = parser_->release();
    HttpRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    for (const auto& field : req)
      request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    request.body = std::move(req.body());
    request.received = Clock::now();
    auto self = shared_from_this();
    Responder respond = [self](HttpResponse&& res) {
      asio::post(self->stream_.get_executor(),
                 [self, res = std::move(res)]() mutable { self->write(std::move(res)); });
    };
    try {
      server_->handler(std::move(request), std::move(respond));
    } catch (const std::exception& e) {
      // The handler answers every error itself; this is the last line against a bug.
      spdlog::error("request handler failed: {}", e.what());
      write({500, "application/json", error_body("internal error"), {}});
    }
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return write({413,
                    "application/json",
                    error_body("request body exceeds the limit of " +
                               std::to_string(server_->options.max_body_bytes) +
                               " bytes ([server] max_body_mb)"),
                    {}});
    }
    if (ec == http::error::header_limit) {
      keep_alive_ = false;
      return write({431, "application/json", error_body("request headers too large"), {}});
    }
    // A malformed request gets an answer; a closed or timed-out connection does not.
    if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      keep_alive_ = false;
      return write(
          {400, "application/json", error_body("malformed HTTP request: " + ec.message()), {}});
    }
    close();
  }

  void write(HttpResponse&& res) {
    auto out = std::make_shared<http::response<http::string_body>>();
    out->version(version_);
    out->result(static_cast<unsigned>(res.status));
    out->set(http::field::server, "tern");
    out->set(http::field::content_type, res.content_type);
    for (auto& [k, v] : res.headers) out->set(k, v);
    out->body() = std::move(res.body);
    out->keep_alive(keep_alive_ && !server_->draining);
    out->prepare_payload();
    if (server_->options.on_status) server_->options.on_status(res.status);
    stream_.expires_after(seconds(server_->options.idle_timeout_secs));
    http::async_write(stream_, *out,
                      [self = shared_from_this(), out](beast::error_code ec, size_t) {
                        if (ec) return self->close();
                        if (!out->keep_alive()) return self->linger();
                        self->read_header();
                      });
  }

  // Half-closes and reads what the client still sends until it closes too, so a client still
  // sending a refused body reads our answer instead of a connection reset.
  void linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    if (parser_ && parser_->is_done()) return close();
    stream_.expires_after(kLingerTime);
    discard();
  }

  void discard() {
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->discard();
                            });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  std::shared_ptr<HttpServer::Impl> server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool idle_ = false;
  std::array<char, 16384> scratch_;
};

void HttpServer::Impl::accept(const std::shared_ptr<Impl>& self) {
  acceptor.async_accept(asio::make_strand(ioc), [self](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors and the like: say so and keep accepting.
      spdlog::warn("accept failed: {}", ec.message());
    } else {
      // Answers are single small writes; Nagle's algorithm would only delay them.
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      auto session = std::make_shared<Session>(std::move(socket), self);
      {
        std::lock_guard lock(self->sessions_mu);
        self->sessions.remove_if([](const auto& w) { return w.expired(); });
        self->sessions.push_back(session);
      }
      session->start();
    }
    self->accept(self);
  });
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  const auto& opt = impl_->options;
  try {
    const tcp::endpoint endpoint(asio::ip::make_address(opt.address), opt.port);
    impl_->acceptor.open(endpoint.protocol());
    impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
    impl_->acceptor.bind(endpoint);
    impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot listen on " + opt.address + ":" + std::to_string(opt.port) +
                             ": " + e.what());
  }
  impl_->accept(impl_);
  for (int i = 0; i < std::max(1, opt.io_threads); ++i)
    impl_->threads.emplace_back([impl = impl_] {
      // A handler that throws is a bug to log, not a reason to lose an I/O thread.
      for (;;) {
        try {
          impl->ioc.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("I/O thread: {}", e.what());
        }
      }
    });
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

void HttpServer::post(std::function<void()> fn) { asio::post(impl_->ioc, std::move(fn)); }

bool HttpServer::drain(double timeout_secs) {
  impl_->draining = true;
  asio::post(impl_->acceptor.get_executor(), [impl = impl_] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  const auto deadline = Clock::now() + seconds(timeout_secs);
  auto wait_until = [&](Clock::time_point t) {
    while (impl_->connections > 0 && Clock::now() < t)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  // A grace period first: a client may be sending its next request on a keep-alive connection
  // right now; it is answered (with Connection: close) instead of finding the connection gone.
  wait_until(Clock::now() + seconds(std::min(kDrainGraceSecs, timeout_secs / 2)));
  {
    std::lock_guard lock(impl_->sessions_mu);
    for (auto& w : impl_->sessions)
      if (auto s = w.lock()) s->close_if_idle();
  }
  wait_until(deadline);
  return impl_->connections == 0;
}

void HttpServer::stop() {
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  impl_->threads.clear();
}

}  // namespace tern::serve
