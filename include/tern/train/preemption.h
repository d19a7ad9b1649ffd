#pragma once
#include <atomic>
#include <string>

#include "tern/base/worker.h"

namespace tern {

// Notices that the job is about to lose its machine: SIGTERM, SIGUSR1 (Slurm's
// --signal=B:USR1@120), or the AWS spot interruption notice. It only raises a flag; the
// training loop acts on it at the next step boundary, after all ranks agree.
class PreemptionWatcher {
 public:
  // spot_url empty: no spot polling. Installs the signal handlers for the object's lifetime.
  explicit PreemptionWatcher(const std::string& spot_url = "", double poll_seconds = 5);
  ~PreemptionWatcher();
  PreemptionWatcher(const PreemptionWatcher&) = delete;
  PreemptionWatcher& operator=(const PreemptionWatcher&) = delete;

  bool requested() const;
  // "SIGTERM", "SIGUSR1", "spot interruption notice", or "".
  std::string reason() const;

 private:
  void poll_spot();
  std::string spot_url_;
  double poll_seconds_;
  std::atomic<bool> spot_{false};
  BackgroundWorker poller_;
};

// One poll of the EC2 instance metadata service (IMDSv2: a session token, then
// /latest/meta-data/spot/instance-action): true when an interruption is scheduled.
bool spot_interruption_scheduled(const std::string& base_url);

}  // namespace tern
