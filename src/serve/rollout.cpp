#include "tern/serve/rollout.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "tern/base/error.h"

namespace fs = std::filesystem;

namespace tern::serve {

using json = nlohmann::json;

const char* phase_name(RolloutState::Phase phase) {
  switch (phase) {
    case RolloutState::Phase::progressing:
      return "progressing";
    case RolloutState::Phase::promoted:
      return "promoted";
    case RolloutState::Phase::failed:
      return "failed";
    case RolloutState::Phase::idle:
      break;
  }
  return "idle";
}

json RolloutState::to_json() const {
  return {{"phase", phase_name(phase)},
          {"primary", primary},
          {"canary", canary},
          {"weight", weight},
          {"failed_checks", failed_checks},
          {"rolled_back", rolled_back},
          {"manual", manual}};
}

RolloutState RolloutState::from_json(const json& j) {
  RolloutState s;
  try {
    const std::string phase = j.at("phase").get<std::string>();
    if (phase == "idle")
      s.phase = Phase::idle;
    else if (phase == "progressing")
      s.phase = Phase::progressing;
    else if (phase == "promoted")
      s.phase = Phase::promoted;
    else if (phase == "failed")
      s.phase = Phase::failed;
    else
      throw InputError("unknown phase '" + phase + "'");
    s.primary = j.at("primary").get<int64_t>();
    s.canary = j.at("canary").get<int64_t>();
    s.weight = j.at("weight").get<double>();
    s.failed_checks = j.at("failed_checks").get<int64_t>();
    s.rolled_back = j.at("rolled_back").get<std::vector<int64_t>>();
    s.manual = j.value("manual", false);
  } catch (const json::exception& e) {
    throw InputError(std::string("malformed rollout state: ") + e.what());
  }
  if (s.weight < 0 || s.weight > 100) throw InputError("rollout state: weight outside [0, 100]");
  return s;
}

RolloutController::RolloutController(std::string state_dir, StatsRegistry& stats,
                                     ShadowRegistry& shadows, AccuracyFn accuracy)
    : state_dir_(std::move(state_dir)),
      stats_(stats),
      shadows_(shadows),
      accuracy_(std::move(accuracy)) {}

RolloutController::~RolloutController() { stop(); }

RolloutController::Track& RolloutController::track_for(const std::string& model) {
  Track& t = tracks_[model];
  if (t.loaded) return t;
  t.loaded = true;
  if (state_dir_.empty()) return t;
  const fs::path path = fs::path(state_dir_) / (model + ".rollout.json");
  std::ifstream in(path);
  if (!in) return t;
  try {
    const json j = json::parse(in);
    t.state = RolloutState::from_json(j);
    spdlog::info("model '{}': rollout state restored from {}: {}", model, path.string(),
                 t.state.to_json().dump());
  } catch (const std::exception& e) {
    // The file is kept for a person to look at; the rollout starts over from what is loaded.
    spdlog::error("model '{}': {}: {}; starting from the loaded versions", model, path.string(),
                  e.what());
  }
  return t;
}

void RolloutController::persist(const std::string& model, const RolloutState& state) const {
  if (state_dir_.empty()) return;
  const fs::path path = fs::path(state_dir_) / (model + ".rollout.json");
  const fs::path tmp = path.string() + ".tmp";
  std::error_code made;
  fs::create_directories(state_dir_, made);  // made when first needed: a read-only repository
                                             // without rollouts never is written to
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << state.to_json().dump() << "\n";
    if (!out.flush()) {
      spdlog::error("model '{}': cannot write {}: the rollout state is not saved", model,
                    tmp.string());
      return;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);  // atomic: a restart reads the old state or the new, never half
  if (ec) spdlog::error("model '{}': cannot rename {}: {}", model, tmp.string(), ec.message());
}

void RolloutController::decide(const std::string& model, Track& track, const std::string& decision,
                               json detail) {
  const RolloutState& s = track.state;
  detail["time"] =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  detail["model"] = model;
  detail["decision"] = decision;
  detail["phase"] = phase_name(s.phase);
  detail["primary"] = s.primary;
  detail["canary"] = s.canary;
  detail["weight"] = s.weight;
  detail["failed_checks"] = s.failed_checks;
  const std::string line = detail.dump();
  if (decision == "rollback" || decision == "check_failed")
    spdlog::warn("rollout {}", line);
  else
    spdlog::info("rollout {}", line);
  persist(model, s);
  if (!state_dir_.empty()) {
    std::ofstream log(fs::path(state_dir_) / "rollout.jsonl", std::ios::app);
    log << line << "\n";
  }
}

void RolloutController::begin_interval(const ModelState& model, Track& t, Clock::time_point now) {
  t.interval_start = now;
  const auto stats = stats_.get(model.name, t.state.canary);
  t.base_success = stats->success.count.load();
  t.base_fail = stats->server_failures.load();
  t.base_latency = stats->request_seconds.counts();
  if (auto sh = shadows_.find(model.name, model.name, t.state.canary))
    t.base_agreement = sh->totals();
  else
    t.base_agreement = {};
}

void RolloutController::step(const ModelState& model, Track& t, Clock::time_point now) {
  RolloutState& s = t.state;
  const RolloutOptions& o = model.options.rollout;
  const auto rolled_back = [&](int64_t v) {
    return std::find(s.rolled_back.begin(), s.rolled_back.end(), v) != s.rolled_back.end();
  };
  if (model.versions.empty()) return;
  if (!s.primary || !model.versions.count(s.primary)) {
    // No primary yet (the first sight of the model), or it left: the oldest version loaded that
    // did not fail serves, and anything newer is a canary.
    const int64_t before = s.primary;
    s.primary = 0;
    for (const auto& [v, lv] : model.versions)
      if (!rolled_back(v)) {
        s.primary = v;
        break;
      }
    if (!s.primary) s.primary = model.versions.begin()->first;
    if (s.phase == RolloutState::Phase::progressing && s.canary == s.primary) s.canary = 0;
    if (!s.canary) s.phase = RolloutState::Phase::idle, s.weight = 0;
    decide(model.name, t, before ? "primary_gone" : "initialize", {{"previous_primary", before}});
  }
  if (s.phase == RolloutState::Phase::progressing && !model.versions.count(s.canary)) {
    s.phase = RolloutState::Phase::idle;  // not a rollback: the version left the repository
    s.weight = 0;
    decide(model.name, t, "canary_gone", json::object());
    s.canary = 0;
  }
  const int64_t newest = model.versions.rbegin()->first;
  if (s.phase != RolloutState::Phase::progressing && newest > s.primary && !rolled_back(newest) &&
      newest != s.canary) {
    s.phase = RolloutState::Phase::progressing;
    s.canary = newest;
    s.weight = o.step_weight;
    s.failed_checks = 0;
    begin_interval(model, t, now);
    decide(model.name, t, "start", json::object());
    return;
  }
  if (s.phase != RolloutState::Phase::progressing) return;
  if (t.interval_start == Clock::time_point{}) {  // restored from disk: a fresh interval
    begin_interval(model, t, now);
    return;
  }
  if (now - t.interval_start < std::chrono::duration<double>(o.interval_seconds)) return;

  // The canary's requests of this interval against the bounds.
  const auto stats = stats_.get(model.name, s.canary);
  const uint64_t ok = stats->success.count.load() - t.base_success;
  const uint64_t failed = stats->server_failures.load() - t.base_fail;
  const uint64_t requests = ok + failed;
  json detail = {{"requests", requests}};
  if (requests < static_cast<uint64_t>(o.min_requests)) {
    detail["reason"] = "fewer than rollout.min_requests requests in the interval";
    begin_interval(model, t, now);
    // Said once per quiet spell: an idle canary would otherwise log every interval.
    if (!t.waiting) decide(model.name, t, "wait", detail);
    t.waiting = true;
    return;
  }
  t.waiting = false;
  std::vector<std::string> reasons;
  const double success = 100.0 * static_cast<double>(ok) / static_cast<double>(requests);
  detail["success_rate"] = success;
  if (success < o.min_success_rate)
    reasons.push_back("success rate " + std::to_string(success) + "% < " +
                      std::to_string(o.min_success_rate) + "%");
  const double p99_ms =
      1000.0 * Histogram::quantile(stats->request_seconds.counts(), t.base_latency, 0.99);
  detail["p99_ms"] = p99_ms;
  if (p99_ms > o.max_p99_ms)
    reasons.push_back("p99 " + std::to_string(p99_ms) + " ms > " + std::to_string(o.max_p99_ms) +
                      " ms");
  if (o.min_accuracy > 0 && accuracy_) {
    if (const auto acc = accuracy_(model.name, s.canary)) {
      detail["accuracy"] = *acc;
      if (*acc < o.min_accuracy)
        reasons.push_back("live accuracy " + std::to_string(*acc) + " < " +
                          std::to_string(o.min_accuracy));
    }
  }
  if (o.min_agreement > 0) {
    if (auto sh = shadows_.find(model.name, model.name, s.canary)) {
      const auto now_totals = sh->totals();
      const uint64_t compared = now_totals.compared - t.base_agreement.compared;
      if (compared > 0) {
        const double agreement = static_cast<double>(now_totals.agreed - t.base_agreement.agreed) /
                                 static_cast<double>(compared);
        detail["agreement"] = agreement;
        if (agreement < o.min_agreement)
          reasons.push_back("agreement " + std::to_string(agreement) + " < " +
                            std::to_string(o.min_agreement));
      }
    }
  }
  begin_interval(model, t, now);
  if (!reasons.empty()) {
    ++s.failed_checks;
    detail["reasons"] = reasons;
    if (s.failed_checks >= o.threshold) {
      s.phase = RolloutState::Phase::failed;
      s.weight = 0;
      s.rolled_back.push_back(s.canary);
      decide(model.name, t, "rollback", detail);
    } else {
      decide(model.name, t, "check_failed", detail);
    }
    return;
  }
  if (s.weight >= o.max_weight) {
    s.phase = RolloutState::Phase::promoted;
    s.primary = s.canary;
    s.canary = 0;
    s.weight = 0;
    decide(model.name, t, "promote", detail);
    return;
  }
  s.weight = std::min(s.weight + o.step_weight, o.max_weight);
  decide(model.name, t, "advance", detail);
}

void RolloutController::tick(const Snapshot& snapshot, Clock::time_point now) {
  std::lock_guard lock(mu_);
  for (const auto& [name, state] : snapshot) {
    if (!state->options.rollout.enabled) continue;
    step(*state, track_for(name), now);
  }
}

void RolloutController::start(std::function<std::shared_ptr<const Snapshot>()> snapshot,
                              double tick_seconds) {
  ticker_.start([this, snapshot = std::move(snapshot), tick_seconds] {
    auto lock = ticker_.lock();
    while (ticker_.wait_for(lock, std::chrono::duration<double>(tick_seconds))) {
      lock.unlock();
      try {
        tick(*snapshot());
      } catch (const std::exception& e) {
        spdlog::error("rollout: {}", e.what());
      }
      lock.lock();
    }
  });
}

void RolloutController::stop() { ticker_.stop(); }

Weights RolloutController::weights(const ModelState& model) {
  std::lock_guard lock(mu_);
  auto it = tracks_.find(model.name);
  if (it == tracks_.end()) {
    Track& t = track_for(model.name);
    if (model.options.rollout.enabled) step(model, t, Clock::now());
    it = tracks_.find(model.name);
  }
  if (!it->second.state.primary) return {};
  const RolloutState& s = it->second.state;
  // A saved state steers a model only while its rollout is on or a person promoted a version:
  // turning [rollout] off gives the model's own traffic back.
  if (!model.options.rollout.enabled && !s.manual) return {};
  if (s.phase == RolloutState::Phase::progressing && s.canary)
    return {{s.primary, 100 - s.weight}, {s.canary, s.weight}};
  return {{s.primary, 100}};
}

int64_t RolloutController::mirror_target(const std::string& model) const {
  std::lock_guard lock(mu_);
  auto it = tracks_.find(model);
  if (it == tracks_.end() || it->second.state.phase != RolloutState::Phase::progressing) return 0;
  return it->second.state.canary;
}

RolloutState RolloutController::promote(const ModelState& model, int64_t version) {
  if (!model.versions.count(version))
    throw InputError("model '" + model.name + "' has no ready version " + std::to_string(version));
  std::lock_guard lock(mu_);
  Track& t = track_for(model.name);
  RolloutState& s = t.state;
  const int64_t before = s.primary;
  s.primary = version;
  s.canary = 0;
  s.weight = 0;
  s.failed_checks = 0;
  s.phase = RolloutState::Phase::promoted;
  s.manual = true;
  std::erase(s.rolled_back, version);
  // Going back by hand passes over the newer versions: none of them is canaried again (a
  // version newer still is).
  for (const auto& [v, lv] : model.versions)
    if (v > version &&
        std::find(s.rolled_back.begin(), s.rolled_back.end(), v) == s.rolled_back.end())
      s.rolled_back.push_back(v);
  decide(model.name, t, "manual_promote", {{"previous_primary", before}});
  return s;
}

std::optional<RolloutState> RolloutController::state(const std::string& model) const {
  std::lock_guard lock(mu_);
  auto it = tracks_.find(model);
  if (it == tracks_.end()) return std::nullopt;
  return it->second.state;
}

void RolloutController::render(std::string& out) const {
  std::lock_guard lock(mu_);
  if (tracks_.empty()) return;
  out +=
      "# HELP tern_rollout_state Rollout phase: 0 idle, 1 progressing, 2 promoted, 3 failed "
      "(rolled back).\n# TYPE tern_rollout_state gauge\n";
  for (const auto& [m, t] : tracks_)
    if (t.state.primary)
      out += "tern_rollout_state{model=\"" + escape_label(m) + "\"} " +
             std::to_string(static_cast<int>(t.state.phase)) + "\n";
  out +=
      "# HELP tern_rollout_weight Percent of the model's traffic each version takes.\n"
      "# TYPE tern_rollout_weight gauge\n";
  for (const auto& [m, t] : tracks_) {
    const RolloutState& s = t.state;
    if (!s.primary) continue;
    const bool canary = s.phase == RolloutState::Phase::progressing && s.canary;
    out += "tern_rollout_weight{model=\"" + escape_label(m) + "\",version=\"" +
           std::to_string(s.primary) + "\",role=\"primary\"} " +
           prometheus_value(canary ? 100 - s.weight : 100) + "\n";
    if (s.canary)
      out += "tern_rollout_weight{model=\"" + escape_label(m) + "\",version=\"" +
             std::to_string(s.canary) + "\",role=\"canary\"} " + prometheus_value(s.weight) + "\n";
  }
  out +=
      "# HELP tern_rollout_failed_checks Failed checks of the current canary.\n"
      "# TYPE tern_rollout_failed_checks gauge\n";
  for (const auto& [m, t] : tracks_)
    if (t.state.primary)
      out += "tern_rollout_failed_checks{model=\"" + escape_label(m) + "\"} " +
             std::to_string(t.state.failed_checks) + "\n";
}

}  // namespace tern::serve
