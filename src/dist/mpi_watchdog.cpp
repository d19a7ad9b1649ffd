#include "mpi_watchdog.h"

#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "tern/base/clock.h"
#include "tern/base/error.h"
#include "tern/base/log.h"

namespace tern {

namespace {
constexpr int kBeatTag = 0x7e31;

// Whether `pid` is Open MPI's daemon (async-signal-safe: called after fork as well).
bool is_orted(pid_t pid) {
  char path[64] = "/proc/";
  char digits[24];
  int n = 0;
  for (unsigned long v = static_cast<unsigned long>(pid); n == 0 || v; v /= 10)
    digits[n++] = static_cast<char>('0' + v % 10);
  size_t at = std::strlen(path);
  while (n) path[at++] = digits[--n];
  std::memcpy(path + at, "/comm", 6);
  const int fd = open(path, O_RDONLY);
  if (fd < 0) return false;
  char name[16] = {};
  const ssize_t got = read(fd, name, sizeof name - 1);
  close(fd);
  return got >= 5 && std::memcmp(name, "orted", 5) == 0 && (got == 5 || name[5] == '\n');
}
struct Identity {
  int64_t pid;
  char host[56];
};
}  // namespace

double MpiWatchdog::now() const {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

MpiWatchdog::MpiWatchdog(MPI_Comm world, const WatchdogOptions& options)
    : timeout_(options.timeout_seconds),
      straggler_(options.straggler_seconds > 0 ? options.straggler_seconds
                                               : options.timeout_seconds / 4),
      // Ten heartbeats per timeout, at most one a second: a peer is declared lost within
      // timeout + one interval of its last beat.
      interval_(std::clamp(options.timeout_seconds / 10, 0.05, 1.0)) {
  MPI_Comm_dup(world, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  Identity me{static_cast<int64_t>(getpid()), {}};
  gethostname(me.host, sizeof me.host - 1);
  std::vector<Identity> all(size_);
  MPI_Allgather(&me, sizeof me, MPI_BYTE, all.data(), sizeof me, MPI_BYTE, comm_);
  peers_.resize(size_);
  const double t = now();
  progress_ = t;
  for (int r = 0; r < size_; ++r) {
    Peer& p = peers_[r];
    p.pid = static_cast<int>(all[r].pid);
    p.host.assign(all[r].host, strnlen(all[r].host, sizeof all[r].host));
    p.heard = t;
    if (r != rank_) MPI_Irecv(&p.in, kBeatWords, MPI_INT64_T, r, kBeatTag, comm_, &p.recv);
  }
  if (size_ > 1) thread_ = std::thread([this] { run(); });
}

MpiWatchdog::~MpiWatchdog() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // Goodbye: peers stop watching this rank, which may leave before they do. Bounded: a peer
  // that is gone does not hold up the exit.
  Beat bye{step_.load(), seq_.load(), -1, 0, 1};
  std::vector<MPI_Request> sends;
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    sends.push_back(MPI_REQUEST_NULL);
    MPI_Isend(&bye, kBeatWords, MPI_INT64_T, r, kBeatTag, comm_, &sends.back());
  }
  int done = 0;
  const double deadline = now() + 2.0;
  while (!sends.empty() && now() < deadline) {
    MPI_Testall(static_cast<int>(sends.size()), sends.data(), &done, MPI_STATUSES_IGNORE);
    if (done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (Peer& p : peers_) {
    if (p.recv == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&p.recv);
    MPI_Wait(&p.recv, MPI_STATUS_IGNORE);
  }
  // A send still pending (a peer gone) would make freeing the communicator wait for it.
  if (done || sends.empty()) MPI_Comm_free(&comm_);
}

int64_t MpiWatchdog::begin(const char* what, int bucket) {
  const double t = now();
  const int64_t s = seq_.fetch_add(1);
  what_ = what;
  bucket_ = bucket;
  wait_since_ = t;
  progress_ = t;
  wait_seq_ = s;
  return s;
}

void MpiWatchdog::end() {
  wait_seq_ = -1;
  progress_ = now();
}

void MpiWatchdog::touch() { progress_ = now(); }

void MpiWatchdog::started() {
  seq_.fetch_add(1);
  progress_ = now();
}

void MpiWatchdog::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::duration<double>(interval_), [this] { return stop_; })) {
    lock.unlock();
    const double t = now();
    exchange(t);
    inspect(t);
    lock.lock();
  }
}

void MpiWatchdog::exchange(double t) {
  const int wait_bucket = wait_seq_ >= 0 ? bucket_.load() : -1;
  const Beat beat{step_.load(), seq_.load(), wait_bucket,
                  static_cast<int64_t>((t - progress_.load()) * 1000), 0};
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    Peer& p = peers_[r];
    int flag = 1;
    // One heartbeat in flight per peer: a peer that does not take them costs no memory.
    if (p.send != MPI_REQUEST_NULL) MPI_Test(&p.send, &flag, MPI_STATUS_IGNORE);
    if (flag) {
      p.out = beat;
      MPI_Isend(&p.out, kBeatWords, MPI_INT64_T, r, kBeatTag, comm_, &p.send);
    }
    while (p.recv != MPI_REQUEST_NULL) {
      flag = 0;
      MPI_Test(&p.recv, &flag, MPI_STATUS_IGNORE);
      if (!flag) break;
      p.last = p.in;
      p.heard = t;
      if (p.in.leaving) {
        p.gone = true;  // p.recv is now null: nothing more is received from it
      } else {
        MPI_Irecv(&p.in, kBeatWords, MPI_INT64_T, r, kBeatTag, comm_, &p.recv);
      }
    }
  }
}

std::string MpiWatchdog::who(int r) const {
  const Peer& p = peers_[r];
  std::string s = "rank " + std::to_string(r) + " (host " + p.host + ", pid " +
                  std::to_string(p.pid) + "), last heard at step " + std::to_string(p.last.step);
  if (p.last.bucket >= 0) s += ", gradient bucket " + std::to_string(p.last.bucket);
  return s;
}

void MpiWatchdog::inspect(double t) {
  const int64_t s = wait_seq_;
  const char* what = what_;
  std::string mine = "this rank is at step " + std::to_string(step_.load());
  double waited = 0;
  if (s >= 0 && what) {
    waited = t - wait_since_;
    mine += ", waiting " + std::to_string(static_cast<int>(waited)) + " s in " + what;
    if (bucket_ >= 0) mine += " (gradient bucket " + std::to_string(bucket_.load()) + ")";
  }
  for (int r = 0; r < size_; ++r) {
    const Peer& p = peers_[r];
    if (r == rank_ || p.gone) continue;
    const double silent = t - p.heard;
    if (silent > timeout_)
      end_job(who(r) + ", stopped answering: no heartbeat for " +
              std::to_string(static_cast<int>(silent)) +
              " s (dead, stopped, or cut off from this rank); " + mine);
  }
  if (s < 0) return;
  // Peers that have not begun this collective yet (their count of begun collectives is not past
  // it): they are what this rank waits for.
  std::vector<int> behind;
  bool all_beating = true;  // a silent peer is not called a straggler (it may be lost)
  for (int r = 0; r < size_; ++r) {
    if (r == rank_ || peers_[r].gone || peers_[r].last.seq > s) continue;
    behind.push_back(r);
    all_beating = all_beating && t - peers_[r].heard < 3 * interval_;
  }
  if (waited > timeout_) {
    for (int r : behind) {
      const Peer& p = peers_[r];
      const double still = static_cast<double>(p.last.progress_age_ms) / 1000 + (t - p.heard);
      if (still > timeout_)
        end_job(who(r) + ", is hung: it answers heartbeats but has made no progress for " +
                std::to_string(static_cast<int>(still)) + " s; " + mine);
    }
    if (behind.empty())
      end_job(
          std::string(what) + " did not complete in " + std::to_string(static_cast<int>(waited)) +
          " s although every rank reached it: the links between the ranks are failing; " + mine);
  }
  if (waited > straggler_ && reported_seq_ != s && !behind.empty() && all_beating) {
    reported_seq_ = s;
    std::string names;
    for (int r : behind) names += (names.empty() ? "" : "; ") + who(r);
    spdlog::warn(
        "straggler: step {}: waited {:.1f} s in {} for {} (still progressing: reported, "
        "not stopped)",
        step_.load(), waited, what, names);
  }
}

void MpiWatchdog::end_job(const std::string& why) {
  spdlog::error("watchdog: {}; ending the job (exit {})", why, static_cast<int>(kExitPeerLost));
  spdlog::default_logger()->flush();
  // MPI_Abort reaches mpirun, which stops every rank. When this host is the one cut off, mpirun
  // cannot reach Open MPI's daemon here, which would wait for it until the link returns: a
  // helper outside the job ends that daemon unless mpirun has within a few seconds. And should
  // the abort itself hang, this process still ends.
  const pid_t daemon = getppid();
  if (is_orted(daemon) && fork() == 0) {
    setsid();
    // Five seconds for mpirun, then SIGTERM, then three more for the daemon to go before SIGKILL;
    // the helper leaves as soon as the daemon has gone.
    const struct timespec tick = {0, 100'000'000};
    for (auto [signal, ticks] : {std::pair{SIGTERM, 50}, std::pair{SIGKILL, 30}}) {
      for (int i = 0; i < ticks; ++i) {
        if (!is_orted(daemon)) _exit(0);
        nanosleep(&tick, nullptr);
      }
      kill(daemon, signal);
    }
    _exit(0);
  }
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    _exit(kExitPeerLost);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, kExitPeerLost);
  _exit(kExitPeerLost);
}

}  // namespace tern
