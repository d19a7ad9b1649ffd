#include "tern/serve/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <fstream>

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
      "  max_queue_size = 1024                queued requests before 429 (0 = unbounded)\n"
      "  instances = 0                        workers per version (0 = server.workers)\n"
      "  traffic = 1:90, 2:10                 weights of the versions for requests naming none\n"
      "  cache = false                        answer repeated inputs from the response cache\n"
      "  timeout_ms = 0                       how long a request may take the model (0 = no "
      "limit)\n"
      "  fallback = MODEL[:VERSION]           answers when the model fails, times out or its\n"
      "                                       breaker is open\n"
      "  priority_levels = 1                  queue levels for the request parameter priority\n"
      "  sticky_header = X-Tern-Route-Key     a header hashed onto the traffic weights\n"
      "  [breaker] [shadow] [rollout] [fault] circuit breaker, mirroring to a challenger,\n"
      "                                       progressive canary, faults on command\n"
      "                                       (docs/serving.md, Safe releases)\n");
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
  o.add("server.model_control_mode", &c.model_control_mode,
        "none (load at startup only) | poll (rescan every repository_poll_secs) | explicit "
        "(the control API loads and unloads); default poll, or none when polling is off");
  o.add("server.load_model", &c.load_model,
        "explicit mode: the models to load at startup, comma-separated; * = all");
  o.add("server.admin_token_file", &c.admin_token_file,
        "a file holding the bearer token of the model control API (load, unload, promote); "
        "without it those are refused");
  o.add("server.state_dir", &c.state_dir,
        "where rollouts keep their state across restarts (default: <repository>/.tern-state "
        "for a local repository; in memory for s3://)");
  o.add("server.max_inflight", &c.max_inflight,
        "requests queued or running over every model before 429; 0 = unbounded");
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
  require(c.model_control_mode.empty() || c.model_control_mode == "none" ||
              c.model_control_mode == "poll" || c.model_control_mode == "explicit",
          "server.model_control_mode", "must be none, poll or explicit");
  require(c.model_control_mode != "poll" || c.repository_poll_secs > 0, "server.model_control_mode",
          "poll needs server.repository_poll_secs > 0");
  require(c.load_model.empty() || c.model_control_mode == "explicit", "server.load_model",
          "only with server.model_control_mode=explicit (the other modes load every model)");
  require(c.max_inflight >= 0, "server.max_inflight", "must be >= 0 (0 = unbounded)");
}

namespace {

// The token, from a file only: a flag's value would show in ps and in shell history.
std::string read_admin_token(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path);
  if (!in) throw InputError("server.admin_token_file=" + path + ": cannot be read");
  std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.size() < 16)
    throw InputError("server.admin_token_file=" + path +
                     ": the token must be at least 16 characters (e.g. openssl rand -hex 32)");
  if (token.find_first_of(" \t\r\n") != std::string::npos)
    throw InputError("server.admin_token_file=" + path + ": the token must be one line, no spaces");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
    spdlog::warn("server.admin_token_file={}: readable by others than its owner (chmod 600)", path);
  return token;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == ',') {
      const auto b = item.find_first_not_of(' ');
      if (b != std::string::npos) out.push_back(item.substr(b, item.find_last_not_of(' ') - b + 1));
      item.clear();
    } else {
      item += text[i];
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> translate_triton_flags(const std::vector<std::string>& args) {
  static const std::map<std::string, std::string> flags = {
      {"--model-repository", "--server.model_repository"},
      {"--model-store", "--server.model_repository"},
      {"--http-port", "--server.http_port"},
      {"--http-address", "--server.address"},
      {"--repository-poll-secs", "--server.repository_poll_secs"},
      {"--http-thread-count", "--server.io_threads"},
      {"--model-control-mode", "--server.model_control_mode"},
      {"--load-model", "--server.load_model"},
      {"--admin-token-file", "--server.admin_token_file"},
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
  const ControlMode mode =
      cfg.model_control_mode.empty()
          ? (cfg.repository_poll_secs > 0 ? ControlMode::poll : ControlMode::none)
          : parse_control_mode(cfg.model_control_mode);
  ReleaseOptions release;
  release.admin_token = read_admin_token(cfg.admin_token_file);
  release.max_inflight = cfg.max_inflight;
  release.state_dir = cfg.state_dir;
  const StoreUri repo_uri = StoreUri::parse(cfg.model_repository, "server.model_repository");
  if (release.state_dir.empty() && repo_uri.kind != StoreUri::Kind::s3)
    release.state_dir = repo_uri.path + "/.tern-state";
  ModelRepository repository(
      {cfg.model_repository, cfg.workers, cfg.store_retry_secs, mode, split_list(cfg.load_model)},
      stats);

  std::atomic<bool> loaded{false}, draining{false};
  HttpServer* http_server = nullptr;
  Router router(
      repository, stats, counters, cache.get(), [&] { return loaded && !draining; },
      [&](std::function<void()> fn) { http_server->post(std::move(fn)); }, release);
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
  spdlog::info("model control mode {}{}", control_mode_name(mode),
               release.admin_token.empty() ? "; the control API is off (no --admin-token-file)"
                                           : "; the control API takes the admin token");
  if (release.state_dir.empty())
    spdlog::warn(
        "rollout state is kept in memory only: set server.state_dir to keep it across "
        "restarts");
  repository.start_polling(cfg.repository_poll_secs);

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
