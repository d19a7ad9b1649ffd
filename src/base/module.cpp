#include "tern/base/module.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace tern {

void* load_module_entry(const char* library, const char* entry, const char* env_override) {
  std::string tried, errors;
  void* handle = nullptr;
  const auto attempt = [&](const std::string& path) {
    if (handle) return;
    tried += (tried.empty() ? "" : ", ") + path;
    handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) errors += std::string("\n  ") + ::dlerror();
  };
  const char* env = env_override ? std::getenv(env_override) : nullptr;
  if (env && *env) {
    attempt(env);
  } else {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    const auto beside = exe.parent_path() / ".." / "lib" / library;
    if (!ec && std::filesystem::exists(beside, ec)) attempt(beside.lexically_normal().string());
    attempt(library);
  }
  if (!handle)
    throw std::runtime_error(std::string(library) + " cannot be loaded (tried " + tried +
                             "):" + errors);
  void* symbol = ::dlsym(handle, entry);
  if (!symbol) throw std::runtime_error(std::string(library) + " has no entry " + entry);
  return symbol;
}

}  // namespace tern
