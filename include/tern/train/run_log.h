#pragma once
// The trainer's run log (metrics.jsonl) and where a step's time goes.
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tern/base/clock.h"

namespace tern {

// Where a training step's time goes (DESIGN.md section 4), in seconds.
struct StepTimes {
  double data_wait = 0, forward = 0, backward = 0, allreduce_wait = 0, optimizer = 0,
         checkpoint_stall = 0;
  void add(const StepTimes& o);
  // Milliseconds per step over `steps` steps, as the run log's fields.
  nlohmann::json per_step_ms(int64_t steps) const;
};

// The run log: one JSON object per line, flushed at once so a killed run keeps every record.
class RunLog {
 public:
  RunLog() = default;
  // append: keep the records of earlier runs of the same job (a resumed run).
  RunLog(const std::string& path, bool append);
  bool enabled() const { return out_.is_open(); }
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
};

}  // namespace tern
