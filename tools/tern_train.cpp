// tern-train: one process per rank (mpirun, srun, or alone). Parses the config and runs the
// library's Trainer.
#include <cstdio>
#include <iostream>

#include "tern/config.h"
#include "tern/dist.h"
#include "tern/error.h"
#include "tern/log.h"
#include "tern/trainer.h"
#include "tern/version.h"

int main(int argc, char** argv) {
  using namespace tern;
  std::unique_ptr<ProcessGroup> group;
  try {
    group = std::make_unique<ProcessGroup>(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern-train: %s\n", e.what());
    return kExitError;
  }
  const bool root = group->rank() == 0;
  TrainerConfig cfg;
  OptionSet options("tern-train");
  register_trainer_options(options, cfg);
  try {
    switch (options.parse(argc, argv)) {
      case OptionSet::Outcome::help:
        if (root) std::cout << options.help_text();
        return kExitOk;
      case OptionSet::Outcome::version:
        if (root) std::cout << "tern-train " << version_string() << "\n";
        return kExitOk;
      case OptionSet::Outcome::run:
        break;
    }
    validate_trainer_config(options, cfg);
  } catch (const InputError& e) {
    if (root) std::fprintf(stderr, "tern-train: error: %s\n", e.what());
    return kExitUsage;
  }

  init_logging(group->rank(), cfg.run.log_level);
  try {
    if (cfg.dist.backend == "none" && group->world() > 1)
      throw InputError(options.describe("dist.backend") + ": " + std::to_string(group->world()) +
                       " ranks need a communication backend");
    auto comm =
        group->world() > 1 ? make_mpi_communicator(MpiScope::world) : make_single_communicator();
    const int threads = configure_cpu_threads(cfg.run.threads, group->local_world());
    if (root)
      spdlog::info("tern-train {}: {} rank(s), {} on this node, {} BLAS thread(s) per rank",
                   version_string(), group->world(), group->local_world(), threads);
    Trainer trainer(cfg, *comm, options.effective_ini(), group->local_rank(), group->local_world());
    if (trainer.run().preempted) return kExitPreempted;
  } catch (const InputError& e) {
    // Inputs are the same on every rank, so every rank stops here with the same message.
    if (root) spdlog::error("{}", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    group->abort(kExitError);
  }
  return kExitOk;
}
