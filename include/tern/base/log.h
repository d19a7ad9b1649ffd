#pragma once
#include <string>

#include <spdlog/spdlog.h>

namespace tern {
// Rank-prefixed logging on stderr: rank 0 at `level`, the other ranks at warn unless `level` is
// debug (DESIGN.md section 7).
void init_logging(int rank, const std::string& level);
}  // namespace tern
