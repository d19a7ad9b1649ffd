#include "tern/train/run_log.h"

#include <stdexcept>

namespace tern {

void StepTimes::add(const StepTimes& o) {
  data_wait += o.data_wait;
  forward += o.forward;
  backward += o.backward;
  allreduce_wait += o.allreduce_wait;
  optimizer += o.optimizer;
  checkpoint_stall += o.checkpoint_stall;
}

nlohmann::json StepTimes::per_step_ms(int64_t steps) const {
  const double k = 1000.0 / static_cast<double>(std::max<int64_t>(steps, 1));
  return {{"data_wait_ms", data_wait * k}, {"forward_ms", forward * k},
          {"backward_ms", backward * k},   {"allreduce_wait_ms", allreduce_wait * k},
          {"optimizer_ms", optimizer * k}, {"checkpoint_stall_ms", checkpoint_stall * k}};
}

RunLog::RunLog(const std::string& path, bool append)
    : out_(path, append ? std::ios::app : std::ios::trunc) {
  if (!out_) throw std::runtime_error("cannot open run log '" + path + "'");
}

void RunLog::write(const nlohmann::json& record) {
  if (!out_.is_open()) return;
  out_ << record.dump() << '\n';
  out_.flush();
}

}  // namespace tern
