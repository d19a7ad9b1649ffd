// tern-train: one process per rank (mpirun, srun, or alone). Parses the config and runs the
// library's Trainer.
#include <iostream>

#include "rank_tool.h"
#include "tern/base/log.h"
#include "tern/base/version.h"
#include "tern/compute/device.h"
#include "tern/train/train_config.h"
#include "tern/train/trainer.h"

int main(int argc, char** argv) {
  using namespace tern;
  return run_rank_tool(&argc, &argv, "tern-train", [&](RankTool& tool) -> int {
    ProcessGroup& group = tool.group;
    TrainerConfig cfg;
    OptionSet options("tern-train");
    register_trainer_options(options, cfg);
    switch (options.parse(argc, argv)) {
      case OptionSet::Outcome::help:
        if (tool.root()) std::cout << options.help_text();
        return kExitOk;
      case OptionSet::Outcome::version:
        if (tool.root()) std::cout << "tern-train " << version_string() << "\n";
        return kExitOk;
      case OptionSet::Outcome::run:
        break;
    }
    validate_trainer_config(options, cfg);

    init_logging(group.rank(), cfg.run.log_level);
    tool.report = [](const std::string& message) { spdlog::error("{}", message); };
    if (cfg.dist.backend == "none" && group.world() > 1)
      throw InputError(options.describe("dist.backend") + ": " + std::to_string(group.world()) +
                       " ranks need a communication backend");
    auto comm = group.world() > 1
                    ? make_mpi_communicator(MpiScope::world,
                                            {cfg.dist.timeout_seconds, cfg.dist.straggler_seconds})
                    : make_single_communicator();
    const int threads = configure_cpu_threads(cfg.run.threads, group.local_world());
    if (tool.root())
      spdlog::info("tern-train {}: {} rank(s), {} on this node, {} BLAS thread(s) per rank",
                   version_string(), group.world(), group.local_world(), threads);
    // Inputs are the same on every rank, so an InputError stops every rank with one message;
    // any other error may be one rank's and ends the job.
    Trainer trainer(cfg, *comm, options.effective_ini(), group.local_rank(), group.local_world());
    return trainer.run().preempted ? kExitPreempted : kExitOk;
  });
}
