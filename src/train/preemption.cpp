#include "tern/train/preemption.h"

#include <curl/curl.h>

#include <unistd.h>

#include <csignal>

#include "tern/base/log.h"

namespace tern {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_signal(int sig) {
  // A second signal (say, a second SIGTERM during the save) changes nothing.
  if (g_signal == 0) g_signal = sig;
}

struct sigaction g_old_term, g_old_usr1;

size_t collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// One request; returns the HTTP status (0 when the service did not answer).
long request(const std::string& url, const char* method, curl_slist* headers, std::string* body) {
  CURL* curl = curl_easy_init();
  if (!curl) return 0;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  long status = 0;
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  return status;
}

}  // namespace

bool spot_interruption_scheduled(const std::string& base_url) {
  std::string token;
  curl_slist* h = curl_slist_append(nullptr, "X-aws-ec2-metadata-token-ttl-seconds: 300");
  const long st = request(base_url + "/latest/api/token", "PUT", h, &token);
  curl_slist_free_all(h);
  if (st != 200 || token.empty()) return false;
  std::string body;
  h = curl_slist_append(nullptr, ("X-aws-ec2-metadata-token: " + token).c_str());
  const long status = request(base_url + "/latest/meta-data/spot/instance-action", "GET", h, &body);
  curl_slist_free_all(h);
  // 404 until AWS schedules a stop or termination; then 200 with {"action": ..., "time": ...}.
  // The host is named so that a launcher can leave it out of the next attempt (run-elastic.sh).
  if (status == 200) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    spdlog::warn("spot interruption notice on host {}: {}", host, body);
  }
  return status == 200;
}

PreemptionWatcher::PreemptionWatcher(const std::string& spot_url, double poll_seconds)
    : spot_url_(spot_url), poll_seconds_(poll_seconds) {
  g_signal = 0;
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGUSR1, &sa, &g_old_usr1);
  if (!spot_url_.empty()) poller_.start([this] { poll_spot(); });
}

PreemptionWatcher::~PreemptionWatcher() {
  poller_.stop();
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGUSR1, &g_old_usr1, nullptr);
}

bool PreemptionWatcher::requested() const { return g_signal != 0 || spot_; }

std::string PreemptionWatcher::reason() const {
  if (g_signal == SIGTERM) return "SIGTERM";
  if (g_signal == SIGUSR1) return "SIGUSR1";
  return spot_ ? "spot interruption notice" : "";
}

void PreemptionWatcher::poll_spot() {
  auto lock = poller_.lock();
  while (!poller_.stopping(lock) && !spot_) {
    lock.unlock();
    const bool notice = spot_interruption_scheduled(spot_url_);
    lock.lock();
    if (notice) spot_ = true;
    poller_.wait_for(lock, std::chrono::duration<double>(poll_seconds_));
  }
}

}  // namespace tern
