#pragma once
// Faults on command, for tests and chaos exercises: a model's config.ini names a control file
// ([fault] control = PATH), and every batch its workers run reads the commands in force:
//   fail = P       a share P of batches throw (the request fails as a broken model's would)
//   sleep_ms = N   each batch takes N ms longer (a slow or hung model)
//   nan = P        a share P of batches answer NaN (a model gone numerically wrong)
// The file is read again whenever it changes (and at least every half second, so a rewrite of
// the same size within one timestamp tick is still seen); a missing or empty file means no faults.
#include <memory>
#include <mutex>
#include <string>

#include "tern/base/clock.h"
#include "tern/serve/scheduler.h"

namespace tern::serve {

class FaultControl {
 public:
  struct Commands {
    double fail = 0, sleep_ms = 0, nan = 0;
  };
  explicit FaultControl(std::string path) : path_(std::move(path)) {}
  // The commands now in force (the file is stat'ed, and read when it changed or was read over
  // half a second ago).
  Commands current();
  const std::string& path() const { return path_; }

 private:
  const std::string path_;
  std::mutex mu_;
  std::string signature_;
  Clock::time_point read_at_{};
  Commands commands_;
};

// `predict` with the control's faults applied before (fail, sleep) and after (nan) each batch.
PredictFn with_faults(PredictFn predict, std::shared_ptr<FaultControl> control,
                      int64_t output_features);

}  // namespace tern::serve
