#include "tern/serve/fault_injection.h"

#include <sys/stat.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>

#include <spdlog/spdlog.h>

namespace tern::serve {

FaultControl::Commands FaultControl::current() {
  struct stat st {};
  std::string sig;
  if (::stat(path_.c_str(), &st) == 0)
    sig = std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
          std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino);
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  if (sig == signature_ && now - read_at_ < std::chrono::milliseconds(500)) return commands_;
  const bool changed = sig != signature_;
  signature_ = sig;
  read_at_ = now;
  const Commands before = commands_;
  commands_ = {};
  std::ifstream in(path_);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string s) {
      const auto b = s.find_first_not_of(" \t\r");
      return b == std::string::npos ? std::string()
                                    : s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
    };
    const std::string key = trim(line.substr(0, eq)), text = trim(line.substr(eq + 1));
    double value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(value) ||
        value < 0) {
      if (changed) spdlog::warn("fault control {}: ignoring '{}'", path_, line);
      continue;
    }
    if (key == "fail")
      commands_.fail = value;
    else if (key == "sleep_ms")
      commands_.sleep_ms = value;
    else if (key == "nan")
      commands_.nan = value;
    else if (changed)
      spdlog::warn("fault control {}: unknown command '{}' (fail, sleep_ms, nan)", path_, key);
  }
  if (changed || before.fail != commands_.fail || before.sleep_ms != commands_.sleep_ms ||
      before.nan != commands_.nan)
    spdlog::info("fault control {}: fail {}, sleep_ms {}, nan {}", path_, commands_.fail,
                 commands_.sleep_ms, commands_.nan);
  return commands_;
}

PredictFn with_faults(PredictFn predict, std::shared_ptr<FaultControl> control,
                      int64_t output_features) {
  return [predict = std::move(predict), control = std::move(control), output_features](
             const InputRows& x, int64_t rows, float* out) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::uniform_real_distribution<double> u(0, 1);
    const FaultControl::Commands c = control->current();
    if (c.sleep_ms > 0)
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(c.sleep_ms));
    if (c.fail > 0 && u(rng) < c.fail)
      throw std::runtime_error("fault injected by " + control->path());
    predict(x, rows, out);
    if (c.nan > 0 && u(rng) < c.nan)
      std::fill(out, out + rows * output_features, std::numeric_limits<float>::quiet_NaN());
  };
}

}  // namespace tern::serve
