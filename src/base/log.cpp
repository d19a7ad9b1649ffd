#include "tern/base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace tern {

void init_logging(int rank, const std::string& level) {
  auto logger = spdlog::stderr_color_mt("tern");
  logger->set_pattern("[%H:%M:%S.%e] [rank " + std::to_string(rank) + "] [%^%l%$] %v");
  spdlog::level::level_enum lvl = spdlog::level::from_str(level);
  if (rank != 0 && lvl != spdlog::level::debug) lvl = std::max(lvl, spdlog::level::warn);
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
}

}  // namespace tern
