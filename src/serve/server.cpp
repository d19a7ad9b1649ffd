#include "tern/serve/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

#include <cstring>
#include <map>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "tern/base/error.h"
#include "tern/base/version.h"
#include "tern/compute/device.h"
#include "tern/io/store.h"
#include "tern/serve/router.h"

namespace tern::serve {

void register_serve_options(OptionSet& o, ServeConfig& c) {
  o.set_epilog(
      "tritonserver's flags work too: --model-repository=DIR, --http-port=N, --http-address=A,\n"
      "--repository-poll-secs=S, --http-thread-count=N.\n\n"
      "Model repository: <repo>/<model>/<version>/model.h5 (version: a positive integer), and\n"
      "optionally <repo>/<model>/config.ini with:\n"
      "  version_policy = latest:N | all | specific:1,3   (default latest:1)\n"
      "  max_batch_size = 64                  rows per batch and per request\n"
      "  max_queue_delay_microseconds = 0     how long a batch waits for more requests\n"
      "  max_queue_size = 1024                queued requests before 503 (0 = unbounded)\n"
      "  instances = 0                        workers per version (0 = server.workers)\n"
      "  traffic = 1:90, 2:10                 weights of the versions for requests naming none\n"
      "  cache = false                        answer repeated inputs from the response cache\n");
  o.add("server.model_repository", &c.model_repository,
        "model repository: a folder, file://PATH or s3://BUCKET/PREFIX (required)");
  o.add("server.address", &c.address, "address to listen on (0.0.0.0: every interface)");
  o.add("server.http_port", &c.http_port, "HTTP port (KServe v2 / Triton protocol, /metrics)");
  o.add("server.workers", &c.workers,
        "inference workers per model version, each with its own copy of the model");
  o.add("server.io_threads", &c.io_threads, "threads serving HTTP connections");
  o.add("server.max_body_mb", &c.max_body_mb, "largest request body in MB; larger ones get 413");
  o.add("server.repository_poll_secs", &c.repository_poll_secs,
        "poll the repository for new, changed and removed versions every S seconds; 0 = never");
  o.add("server.idle_timeout_secs", &c.idle_timeout_secs,
        "close a keep-alive connection idle this long");
  o.add("server.drain_timeout_secs", &c.drain_timeout_secs,
        "on SIGTERM/SIGINT, wait this long for requests in progress before exiting");
  o.add("server.store_retry_secs", &c.store_retry_secs,
        "how long one object store operation retries (s3:// repositories)");
  o.add("server.blas_threads", &c.blas_threads, "BLAS threads per inference worker");
  o.add("server.log_level", &c.log_level, "log level: debug | info | warn | error");
  o.add("cache.size_mb", &c.cache_size_mb,
        "response cache size in MB, shared by models with cache = true; 0 = off");
}

void validate_serve_config(const OptionSet& o, const ServeConfig& c) {
  auto require = [&](bool ok, const std::string& key, const std::string& what) {
    if (!ok) throw InputError(o.describe(key) + ": " + what);
  };
  require(!c.model_repository.empty(), "server.model_repository",
          "required: where the models are (or --model-repository=DIR)");
  StoreUri::parse(c.model_repository, o.describe("server.model_repository"));
  unsigned char addr[16];
  require(::inet_pton(AF_INET, c.address.c_str(), addr) == 1 ||
              ::inet_pton(AF_INET6, c.address.c_str(), addr) == 1,
          "server.address", "must be an IPv4 or IPv6 address");
  require(c.http_port >= 0 && c.http_port <= 65535, "server.http_port",
          "must lie in [0, 65535] (0: any free port)");
  require(c.workers >= 1 && c.workers <= 256, "server.workers", "must lie in [1, 256]");
  require(c.io_threads >= 1 && c.io_threads <= 256, "server.io_threads", "must lie in [1, 256]");
  require(c.max_body_mb > 0 && c.max_body_mb <= 4096, "server.max_body_mb",
          "must lie in (0, 4096]");
  require(c.repository_poll_secs >= 0, "server.repository_poll_secs", "must be >= 0");
  require(c.idle_timeout_secs > 0, "server.idle_timeout_secs", "must be > 0");
  require(c.drain_timeout_secs >= 0, "server.drain_timeout_secs", "must be >= 0");
  require(c.store_retry_secs >= 0, "server.store_retry_secs", "must be >= 0");
  require(c.blas_threads >= 1, "server.blas_threads", "must be >= 1");
  require(spdlog::level::from_str(c.log_level) != spdlog::level::off || c.log_level == "off",
          "server.log_level", "must be debug, info, warn or error");
  require(c.cache_size_mb >= 0, "cache.size_mb", "must be >= 0 (0 = no cache)");
}

std::vector<std::string> translate_triton_flags(const std::vector<std::string>& args) {
  static const std::map<std::string, std::string> flags = {
      {"--model-repository", "--server.model_repository"},
      {"--model-store", "--server.model_repository"},
      {"--http-port", "--server.http_port"},
      {"--http-address", "--server.address"},
      {"--repository-poll-secs", "--server.repository_poll_secs"},
      {"--http-thread-count", "--server.io_threads"},
  };
  std::vector<std::string> out;
  for (const auto& arg : args) {
    const auto eq = arg.find('=');
    auto it = flags.find(arg.substr(0, eq));
    out.push_back(it == flags.end() ? arg
                                    : it->second + (eq == std::string::npos ? "" : arg.substr(eq)));
  }
  return out;
}

namespace {

int signal_pipe[2] = {-1, -1};

// Async-signal-safe: the main thread reads the signal from the pipe and drains as ordinary code.
extern "C" void on_stop_signal(int sig) {
  const char c = static_cast<char>(sig);
  [[maybe_unused]] auto n = ::write(signal_pipe[1], &c, 1);
}

// A handler rather than a blocked mask with sigwait: threads started before main (OpenBLAS's)
// do not block the signals, and one of them taking SIGTERM would kill the process undrained.
void catch_stop_signals() {
  if (::pipe2(signal_pipe, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
  // A client gone mid-answer is a failed write, not the end of the server.
  ::signal(SIGPIPE, SIG_IGN);
}

int wait_for_stop_signal() {
  char c = 0;
  while (::read(signal_pipe[0], &c, 1) < 0 && errno == EINTR) {
  }
  return c;
}

// Every keep-alive connection holds a descriptor, and the usual soft limit (1024) is a few hundred
// idle clients away: raise it to the hard limit, as nginx's worker_rlimit_nofile and Go's runtime
// do. A limit that cannot be raised is kept, with a warning.
void raise_open_file_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  const rlim_t before = lim.rlim_cur;
  // An unlimited hard limit is still bounded by the kernel's nr_open (1M by default).
  lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : lim.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &lim) == 0)
    spdlog::debug("open file limit raised from {} to {}", before, lim.rlim_cur);
  else
    spdlog::warn("open file limit stays at {}: {}", before, std::strerror(errno));
}

void init_server_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("tern-serve");
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

}  // namespace

int run_server(const ServeConfig& cfg) {
  catch_stop_signals();
  init_server_logging(cfg.log_level);
  raise_open_file_limit();
  // Workers run in parallel already; more BLAS threads each would oversubscribe the cores.
  configure_cpu_threads(cfg.blas_threads, 1);

  StatsRegistry stats;
  ServerCounters counters;
  std::unique_ptr<ResponseCache> cache;
  if (cfg.cache_size_mb > 0)
    cache = std::make_unique<ResponseCache>(static_cast<size_t>(cfg.cache_size_mb * (1 << 20)));
  ModelRepository repository({cfg.model_repository, cfg.workers, cfg.store_retry_secs}, stats);

  std::atomic<bool> loaded{false}, draining{false};
  HttpServer* http_server = nullptr;
  Router router(
      repository, stats, counters, cache.get(), [&] { return loaded && !draining; },
      [&](std::function<void()> fn) { http_server->post(std::move(fn)); });
  HttpServerOptions http_options;
  http_options.address = cfg.address;
  http_options.port = static_cast<uint16_t>(cfg.http_port);
  http_options.io_threads = static_cast<int>(cfg.io_threads);
  http_options.max_body_bytes = static_cast<size_t>(cfg.max_body_mb * (1 << 20));
  http_options.idle_timeout_secs = cfg.idle_timeout_secs;
  http_options.on_status = [&](int status) { counters.count_status(status); };
  HttpServer http(http_options, [&](HttpRequest&& request, Responder respond) {
    router.handle(std::move(request), std::move(respond));
  });
  http_server = &http;

  // Listen before loading, so liveness probes answer while the models load.
  http.start();
  spdlog::info("tern-serve {} listening on {}:{}; model repository {}", version_string(),
               cfg.address, http.port(), cfg.model_repository);
  repository.poll(true);
  loaded = true;
  spdlog::info("ready: {} model(s)", repository.snapshot()->size());
  if (cfg.repository_poll_secs > 0) repository.start_polling(cfg.repository_poll_secs);

  const int sig = wait_for_stop_signal();
  spdlog::info("{}: draining (at most {} s)", strsignal(sig), cfg.drain_timeout_secs);
  draining = true;
  const bool drained = http.drain(cfg.drain_timeout_secs);
  repository.stop();
  http.stop();
  if (drained)
    spdlog::info("every request answered; exiting");
  else
    spdlog::warn("drain timed out: connections still open were dropped");
  return kExitOk;
}

}  // namespace tern::serve
