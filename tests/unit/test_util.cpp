#include "test_util.h"

#include <unistd.h>

#include <filesystem>

namespace tern::testing {

std::string temp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("tern-test-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

}  // namespace tern::testing
