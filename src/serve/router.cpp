#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <random>

#include <spdlog/spdlog.h>

#include "tern/base/error.h"
#include "tern/base/version.h"
#include "tern/serve/router.h"

namespace tern::serve {

using json = nlohmann::json;

namespace {

HttpResponse json_response(const json& body, int status = 200) {
  return {
      status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace), {}};
}

HttpResponse error_response(int status, const std::string& message) {
  return {status, "application/json", error_body(message), {}};
}

uint64_t ns_since(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count());
}

// The path's segments, percent-decoded; empty segments and the query string are ignored.
std::vector<std::string> path_segments(const std::string& target) {
  const std::string path = target.substr(0, target.find('?'));
  std::vector<std::string> out;
  std::string seg;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!seg.empty()) out.push_back(std::move(seg));
      seg.clear();
      continue;
    }
    if (path[i] != '%') {
      seg += path[i];
      continue;
    }
    unsigned value = 0;
    const char* hex = path.data() + i + 1;
    if (i + 3 > path.size() || std::from_chars(hex, hex + 2, value, 16).ptr != hex + 2)
      throw HttpError(400, "malformed percent-encoding in the path '" + path + "'");
    seg += static_cast<char>(value);
    i += 2;
  }
  return out;
}

// 405, with the method the endpoint takes for the Allow header.
class MethodError : public HttpError {
 public:
  MethodError(const std::string& method, const char* allowed)
      : HttpError(405, "method " + method + " is not allowed here; use " + allowed),
        allowed_(allowed) {}
  const char* allowed() const { return allowed_; }

 private:
  const char* allowed_;
};

void require_method(const HttpRequest& request, const char* method) {
  if (request.method != method) throw MethodError(request.method, method);
}

int64_t parse_version(const std::string& text) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || v < 1)
    throw HttpError(400, "version '" + text + "' is not a positive integer");
  return v;
}

std::string ready_versions(const ModelState& model) {
  std::string out;
  for (const auto& [v, lv] : model.versions) {
    if (!out.empty()) out += ", ";
    out += std::to_string(v);
  }
  return out.empty() ? "none" : out;
}

json shape_json(const Shape& row_shape, bool batch_dim) {
  json shape = json::array();
  if (batch_dim) shape.push_back(-1);
  for (int64_t d : row_shape) shape.push_back(d);
  return shape;
}

// The input's shape in metadata and config. A language model takes 1 to T token ids per row,
// which Triton writes as a variable dimension, -1: a fixed T would tell clients (and Triton's
// own checks) that exactly T are required. The limit T is the config's max_sequence_length.
json input_shape_json(const ModelSchema& s, bool batch_dim) {
  if (s.tokens() && s.min_tokens < s.input_features()) return shape_json({-1}, batch_dim);
  return shape_json(s.input_shape, batch_dim);
}

}  // namespace

struct Router::InferCall {
  std::shared_ptr<LoadedVersion> version;  // held until answered: a swap never pulls it away
  InferRequest request;
  std::string cache_key;
  Clock::time_point received;
  Responder respond_to_client;

  // Deadlines: the request's own (parameters.timeout), and the primary's share of it (the
  // model's timeout_ms, or half of the request's time when a fallback waits behind it).
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point primary_deadline = Clock::time_point::max();
  int64_t priority = 1;
  CircuitBreaker::Permit permit;
  bool breaker_recorded = false;
  Clock::time_point submitted;
  InputRows fallback_input;  // a copy for the fallback: the primary's job holds the original
  std::shared_ptr<LoadedVersion> fallback;
  std::string fallback_reason;
  AdmissionGate* gate = nullptr;  // left when the call ends

  // Who may answer: the primary's result, its deadline, then the fallback; the first one to
  // claim the phase answers and the others drop what they have.
  enum class Phase { primary, fallback, answered };
  std::mutex mu;
  Phase phase = Phase::primary;
  std::optional<DeadlineTimer::Id> timer;

  ~InferCall() { leave_gate(); }
  // Answers the client and frees the request's place in the server's limit: a request answered
  // at its deadline (or by the fallback) no longer counts, though its model may still run it
  // (the model's own queue bounds those).
  void respond(HttpResponse&& response) {
    leave_gate();
    respond_to_client(std::move(response));
  }
  void leave_gate() {
    if (AdmissionGate* g = std::exchange(gate, nullptr)) g->leave();
  }
  bool claim(Phase from, Phase to) {
    std::lock_guard lock(mu);
    if (phase != from) return false;
    phase = to;
    return true;
  }
  std::optional<DeadlineTimer::Id> take_timer() {
    std::lock_guard lock(mu);
    auto t = timer;
    timer.reset();
    return t;
  }
};

namespace {

std::string ms_text(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", std::chrono::duration<double, std::milli>(d).count());
  return buf;
}

// Whether every value is finite; the first row that is not, otherwise.
std::optional<int64_t> non_finite_row(const std::vector<float>& out, int64_t features) {
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i])) return static_cast<int64_t>(i) / std::max<int64_t>(features, 1);
  return std::nullopt;
}

std::string version_label(const LoadedVersion& lv) {
  return "model '" + lv.model + "' version " + std::to_string(lv.version);
}

// Whether `other` takes the requests and gives the answers of `primary` (a fallback or a
// challenger must, to stand in for it or be compared with it).
std::string incompatibility(const ModelSchema& primary, const ModelSchema& other) {
  if (primary.input_name != other.input_name || primary.input_shape != other.input_shape ||
      primary.input_datatype != other.input_datatype)
    return "it takes another input (" + other.input_name + " " + other.input_datatype + " " +
           shape_str(other.input_shape) + ")";
  if (primary.output_name != other.output_name || primary.output_features != other.output_features)
    return "it gives another output (" + other.output_name + ", " +
           std::to_string(other.output_features) + " values)";
  return "";
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    diff |= static_cast<unsigned char>((i < a.size() ? a[i] : 0) ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

}  // namespace

Router::Router(ModelRepository& repository, StatsRegistry& stats, const ServerCounters& counters,
               ResponseCache* cache, std::function<bool()> ready,
               std::function<void(std::function<void()>)> post, ReleaseOptions release)
    : repository_(repository),
      stats_(stats),
      counters_(counters),
      cache_(cache),
      ready_(std::move(ready)),
      post_(std::move(post)),
      release_(std::move(release)),
      rollouts_(release_.state_dir, stats, shadows_,
                [this](const std::string& model, int64_t version) -> std::optional<double> {
                  const auto all = watches_.all();
                  auto it = all.find(model);
                  if (it == all.end()) return std::nullopt;
                  for (const auto& live : it->second->feedback->live())
                    if (live.version == version && live.rows >= 20) return live.accuracy;
                  return std::nullopt;
                }),
      admission_(release_.max_inflight) {
  if (release_.rollout_tick_seconds > 0)
    rollouts_.start([this] { return repository_.snapshot(); }, release_.rollout_tick_seconds);
}

Router::~Router() { rollouts_.stop(); }

void Router::handle(HttpRequest&& request, Responder respond) {
  HttpResponse response;
  bool answered = false;
  try {
    response = route(request, respond, answered);
  } catch (const MethodError& e) {
    response = error_response(e.status(), e.what());
    response.headers.emplace_back("Allow", e.allowed());
  } catch (const HttpError& e) {
    response = error_response(e.status(), e.what());
    if (e.status() == 503 || e.status() == 429) response.headers.emplace_back("Retry-After", "1");
    if (e.status() == 401)
      response.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"tern\"");
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", request.method, request.target, e.what());
    response = error_response(500, std::string("internal error: ") + e.what());
  }
  if (!answered) respond(std::move(response));
}

namespace {

// The model, and the version a request names (or the one traffic splitting picks).
struct Resolved {
  std::shared_ptr<const ModelState> model;
  std::shared_ptr<LoadedVersion> version;
};

// Why the repository serves no version of a model it has found; empty if it found none.
std::string unavailable_reasons(const ModelRepository& repository, const std::string& name) {
  std::string out;
  for (const auto& entry : repository.index(false)) {
    if (entry.value("name", "") != name) continue;
    if (!out.empty()) out += "; ";
    if (entry.contains("version")) out += "version " + entry.value("version", "") + ": ";
    out += entry.value("reason", std::string("not loaded"));
  }
  return out;
}

Resolved resolve(const ModelRepository& repository, const std::string& name,
                 const std::optional<std::string>& version, bool pick) {
  const auto snap = repository.snapshot();
  auto it = snap->find(name);
  if (it == snap->end()) {
    const std::string reasons = unavailable_reasons(repository, name);
    if (!reasons.empty()) throw HttpError(503, "model '" + name + "' is not ready: " + reasons);
    throw HttpError(404, "unknown model '" + name + "'");
  }
  Resolved r{it->second, nullptr};
  if (version) {
    const int64_t v = parse_version(*version);
    auto vit = r.model->versions.find(v);
    if (vit == r.model->versions.end())
      throw HttpError(404, "model '" + name + "' has no ready version " + *version +
                               " (ready: " + ready_versions(*r.model) + ")");
    r.version = vit->second;
  } else if (pick) {
    r.version = r.model->choose();
  } else if (!r.model->versions.empty()) {
    r.version = r.model->versions.rbegin()->second;
  }
  if (!r.version && pick)
    throw HttpError(
        503, "model '" + name + "' has no ready version: " + unavailable_reasons(repository, name));
  return r;
}

}  // namespace

HttpResponse Router::route(HttpRequest& request, Responder& respond, bool& answered) {
  const auto seg = path_segments(request.target);
  const size_t n = seg.size();
  if (n == 1 && seg[0] == "metrics") {
    require_method(request, "GET");
    return metrics();
  }
  if (n == 0 || seg[0] != "v2")
    throw HttpError(404, "unknown endpoint " + request.method + " " + request.target);
  if (n == 1) {
    require_method(request, "GET");
    return json_response(
        {{"name", "tern"},
         {"version", version_string()},
         {"extensions",
          {"binary_tensor_data", "classification", "model_configuration", "model_repository",
           "statistics", "tern_monitoring", "tern_releases"}}});
  }
  if (n == 3 && seg[1] == "health" && (seg[2] == "live" || seg[2] == "ready")) {
    require_method(request, "GET");
    if (seg[2] == "ready" && !ready_()) throw HttpError(503, "the server is not ready");
    return {200, "text/plain", "", {}};
  }
  if (seg[1] == "repository") return control(request, seg);
  if (seg[1] != "models" || n < 3)
    throw HttpError(404, "unknown endpoint " + request.method + " " + request.target);
  if (n == 3 && seg[2] == "stats") {
    require_method(request, "GET");
    return model_stats("", std::nullopt);
  }
  // /v2/models/{m}[/versions/{v}][/ready|/config|/stats|/infer]
  const std::string& model = seg[2];
  std::optional<std::string> version;
  size_t rest = 3;
  if (n >= 5 && seg[3] == "versions") {
    version = seg[4];
    rest = 5;
  }
  const std::string action = n == rest + 1 ? seg[rest] : n == rest ? "" : "?";
  if (action == "infer") {
    require_method(request, "POST");
    infer(request, model, version, respond);
    answered = true;
    return {};
  }
  if (action == "feedback" && !version) return feedback(request, model);
  if (action == "rollout" && !version) {
    require_method(request, "GET");
    const Resolved r = resolve(repository_, model, std::nullopt, false);
    json weights = json::object();
    for (const auto& [v, w] : rollouts_.weights(*r.model)) weights[std::to_string(v)] = w;
    const auto state = rollouts_.state(model);
    json body = {{"model_name", model}, {"rollout_enabled", r.model->options.rollout.enabled}};
    body["state"] = state && state->primary ? state->to_json() : json(nullptr);
    body["weights"] = weights;
    return json_response(body);
  }
  if (action == "?" || (!action.empty() && action != "ready" && action != "config" &&
                        action != "stats" && action != "drift"))
    throw HttpError(404, "unknown endpoint " + request.method + " " + request.target);
  require_method(request, "GET");
  if (action == "stats") return model_stats(model, version);
  if (action == "drift") return drift(model, version);
  if (action == "ready") {
    // The protocol's readiness is the status alone: 200 ready, 4xx not.
    Resolved r;
    try {
      r = resolve(repository_, model, version, false);
    } catch (const HttpError& e) {
      if (e.status() != 503) throw;
      throw HttpError(400, e.what());
    }
    if (!r.version) throw HttpError(400, "model '" + model + "' is not ready");
    return {200, "text/plain", "", {}};
  }
  const Resolved r = resolve(repository_, model, version, false);
  if (action == "config") {
    if (!r.version) throw HttpError(503, "model '" + model + "' has no ready version");
    return model_config(*r.model, *r.version);
  }
  return model_metadata(*r.model, version ? r.version.get() : nullptr);
}

void Router::authorize(const HttpRequest& request) const {
  if (release_.admin_token.empty())
    throw HttpError(403,
                    "the model control API is off: start tern-serve with --admin-token-file=PATH "
                    "to allow it");
  const auto h = request.header("Authorization");
  if (!h)
    throw HttpError(401,
                    "the model control API needs the header 'Authorization: Bearer TOKEN' "
                    "(the token in the server's --admin-token-file)");
  // The scheme is case-insensitive (RFC 7235); the token is not.
  const std::string_view v = *h;
  const bool bearer = v.size() > 7 && v[6] == ' ' &&
                      std::equal(v.begin(), v.begin() + 6, "bearer", [](char a, char b) {
                        return std::tolower(static_cast<unsigned char>(a)) == b;
                      });
  if (!bearer || !constant_time_equal(v.substr(7), release_.admin_token))
    throw HttpError(403, "the admin token is not the server's (Authorization: Bearer TOKEN)");
}

// Triton's model repository extension (index, load, unload) and tern's promote.
HttpResponse Router::control(HttpRequest& request, const std::vector<std::string>& seg) {
  require_method(request, "POST");
  const size_t n = seg.size();
  // Who asks is checked before what is asked: no one without the token learns how the body is
  // read.
  if (n == 3 && seg[2] == "index") {
    if (!release_.admin_token.empty()) authorize(request);
  } else if (n == 5 && seg[2] == "models") {
    authorize(request);
  }
  json body = json::object();
  if (!request.body.empty()) {
    body = json::parse(request.body, nullptr, false);
    if (!body.is_object()) throw HttpError(400, "the repository request must be a JSON object");
  }
  const json params = body.value("parameters", json::object());
  if (!params.is_object()) throw HttpError(400, "'parameters' must be an object");
  if (n == 3 && seg[2] == "index") {
    // With a token, the index too is for its holders (checked above): it tells what the
    // repository holds.
    bool ready_only = false;
    if (auto it = body.find("ready"); it != body.end()) {
      if (!it->is_boolean()) throw HttpError(400, "index request: 'ready' must be true or false");
      ready_only = it->get<bool>();
    }
    return json_response(repository_.index(ready_only));
  }
  if (n != 5 || seg[2] != "models")
    throw HttpError(404, "unknown endpoint " + request.method + " " + request.target);
  const std::string& model = seg[3];
  const std::string& action = seg[4];
  if (action != "load" && action != "unload" && action != "promote")
    throw HttpError(404, "unknown endpoint " + request.method + " " + request.target);
  if (action == "promote") {
    const Resolved r = resolve(repository_, model, std::nullopt, false);
    const json v = body.value("version", json(nullptr));
    int64_t version = 0;
    if (v.is_string())
      version = parse_version(v.get<std::string>());
    else if (v.is_number_unsigned())
      version = v.get<int64_t>();
    else
      throw HttpError(400, "promote: give the version to serve, {\"version\": \"2\"}");
    try {
      const RolloutState state = rollouts_.promote(*r.model, version);
      return json_response({{"model_name", model}, {"state", state.to_json()}});
    } catch (const InputError& e) {
      throw HttpError(400, e.what());
    }
  }
  if (repository_.mode() != ControlMode::explicit_)
    throw HttpError(400, std::string("explicit model ") + action +
                             " is not allowed: the model "
                             "control mode is " +
                             control_mode_name(repository_.mode()) +
                             " (start tern-serve with --model-control-mode=explicit)");
  try {
    if (action == "unload") {
      repository_.unload_model(model);
      spdlog::info("control API: model '{}' unloaded", model);
      return json_response(json::object());
    }
    std::optional<std::string> config;
    std::optional<int64_t> version;
    for (const auto& [key, value] : params.items()) {
      if (key == "config") {
        if (!value.is_string())
          throw HttpError(400,
                          "load: parameter 'config' must be a string (config.ini text, or "
                          "Triton's model configuration as JSON)");
        config = value.get<std::string>();
      } else if (key == "version") {
        if (value.is_string())
          version = parse_version(value.get<std::string>());
        else if (value.is_number_unsigned() && value.get<int64_t>() > 0)
          version = value.get<int64_t>();
        else
          throw HttpError(400, "load: parameter 'version' must be a positive integer");
      } else if (key.rfind("file:", 0) == 0) {
        throw HttpError(400,
                        "load: model files in the request are not supported; put them in "
                        "the repository");
      } else {
        throw HttpError(400, "load: unknown parameter '" + key + "' (config, version)");
      }
    }
    repository_.load_model(model, config, version);
    spdlog::info("control API: model '{}' loaded", model);
    return json_response(json::object());
  } catch (const InputError& e) {
    throw HttpError(400, e.what());
  } catch (const StoreError& e) {
    throw HttpError(503, std::string("the model repository cannot be read: ") + e.what());
  }
}

HttpResponse Router::model_metadata(const ModelState& model, const LoadedVersion* version) const {
  json versions = json::array();
  if (version) {
    versions.push_back(std::to_string(version->version));
  } else {
    for (const auto& [v, lv] : model.versions) versions.push_back(std::to_string(v));
  }
  const LoadedVersion* shown = version                  ? version
                               : model.versions.empty() ? nullptr
                                                        : model.versions.rbegin()->second.get();
  json body = {{"name", model.name}, {"versions", versions}, {"platform", "tern"}};
  if (shown) {
    const ModelSchema& s = shown->schema;
    body["inputs"] = {{{"name", s.input_name},
                       {"datatype", s.input_datatype},
                       {"shape", input_shape_json(s, true)}}};
    body["outputs"] = {{{"name", s.output_name},
                        {"datatype", "FP32"},
                        {"shape", shape_json({s.output_features}, true)}}};
  } else {
    body["inputs"] = json::array();
    body["outputs"] = json::array();
  }
  return json_response(body);
}

HttpResponse Router::model_config(const ModelState& model, const LoadedVersion& version) const {
  const ModelSchema& s = version.schema;
  const ModelOptions& o = version.options;
  json output = {{"name", s.output_name},
                 {"data_type", "TYPE_FP32"},
                 {"dims", shape_json({s.output_features}, false)}};
  if (!s.labels.empty()) output["labels"] = s.labels;  // tern: the export carries them
  json config = {
      {"name", model.name},
      {"platform", "tern"},
      {"backend", "tern"},
      {"version_policy", policy_json(o.policy)},
      {"max_batch_size", o.max_batch_size},
      {"input",
       {{{"name", s.input_name},
         {"data_type", "TYPE_" + s.input_datatype},
         {"dims", input_shape_json(s, false)}}}},
      {"output", {output}},
      {"dynamic_batching",
       {{"max_queue_delay_microseconds", o.max_queue_delay_us},
        {"default_queue_policy", {{"max_queue_size", o.max_queue_size}}}}},
      {"instance_group", {{{"count", version.instances}, {"kind", "KIND_CPU"}}}},
      {"response_cache", {{"enable", o.cache}}},
  };
  if (!o.traffic.empty()) {
    std::string traffic;
    for (const auto& [v, w] : o.traffic) {
      if (!traffic.empty()) traffic += ", ";
      char weight[32];
      traffic += std::to_string(v) + ":" +
                 std::string(weight, std::to_chars(weight, weight + sizeof weight, w).ptr);
    }
    config["parameters"]["traffic"] = {{"string_value", traffic}};
  }
  if (s.tokens()) {
    // Token ids per row at most (the block size), and the number of ids (Triton's parameters are
    // strings).
    config["parameters"]["max_sequence_length"] = {
        {"string_value", std::to_string(s.input_features())}};
    config["parameters"]["vocab_size"] = {{"string_value", std::to_string(s.vocab)}};
  }
  return json_response(config);
}

HttpResponse Router::model_stats(const std::string& model,
                                 const std::optional<std::string>& version) const {
  // The loaded versions, as Triton shows; counters of unloaded ones stay in /metrics.
  const auto snap = repository_.snapshot();
  std::optional<int64_t> wanted;
  if (version) wanted = parse_version(*version);
  if (!model.empty()) {
    auto it = snap->find(model);
    if (it == snap->end()) throw HttpError(404, "unknown model '" + model + "'");
    if (wanted && !it->second->versions.count(*wanted))
      throw HttpError(404, "model '" + model + "' has no ready version " + *version);
  }
  json list = json::array();
  for (const auto& [name, state] : *snap) {
    if (!model.empty() && name != model) continue;
    for (const auto& [v, lv] : state->versions)
      if (!wanted || v == *wanted) list.push_back(lv->stats->to_json());
  }
  return json_response({{"model_stats", list}});
}

namespace {

// Breakers, deadlines, fallbacks and shedding.
void render_release_metrics(std::string& out, const Snapshot& snap,
                            const std::vector<std::shared_ptr<VersionStats>>& all,
                            const AdmissionGate& admission) {
  auto labels = [](const std::string& model, int64_t version) {
    return "model=\"" + escape_label(model) + "\",version=\"" + std::to_string(version) + "\"";
  };
  out +=
      "# HELP tern_breaker_state Circuit breaker: 0 closed, 1 open, 2 half-open.\n"
      "# TYPE tern_breaker_state gauge\n";
  for (const auto& [name, state] : snap)
    for (const auto& [v, lv] : state->versions)
      if (lv->breaker->enabled())
        out += "tern_breaker_state{" + labels(name, v) + "} " +
               std::to_string(static_cast<int>(lv->breaker->state())) + "\n";
  out +=
      "# HELP tern_breaker_rejected_total Calls refused by an open breaker.\n"
      "# TYPE tern_breaker_rejected_total counter\n";
  for (const auto& [name, state] : snap)
    for (const auto& [v, lv] : state->versions)
      if (lv->breaker->enabled())
        out += "tern_breaker_rejected_total{" + labels(name, v) + "} " +
               std::to_string(lv->breaker->rejected()) + "\n";
  out +=
      "# HELP tern_deadline_exceeded_total Requests past their deadline, by where they were.\n"
      "# TYPE tern_deadline_exceeded_total counter\n";
  for (const auto& s : all) {
    out += "tern_deadline_exceeded_total{" + labels(s->model, s->version) + ",where=\"queue\"} " +
           std::to_string(s->deadline_queue.load()) + "\n";
    out += "tern_deadline_exceeded_total{" + labels(s->model, s->version) +
           ",where=\"in_flight\"} " + std::to_string(s->deadline_in_flight.load()) + "\n";
  }
  out +=
      "# HELP tern_fallback_total Requests handed to the fallback, by why the primary did not "
      "answer.\n# TYPE tern_fallback_total counter\n";
  for (const auto& s : all) {
    const std::pair<const char*, uint64_t> reasons[] = {{"error", s->fallback_error.load()},
                                                        {"deadline", s->fallback_deadline.load()},
                                                        {"breaker", s->fallback_breaker.load()}};
    for (const auto& [reason, n] : reasons)
      out += "tern_fallback_total{" + labels(s->model, s->version) + ",reason=\"" + reason +
             "\"} " + std::to_string(n) + "\n";
  }
  out +=
      "# HELP tern_shed_total Requests refused with 429, by which limit.\n"
      "# TYPE tern_shed_total counter\n";
  for (const auto& s : all)
    out += "tern_shed_total{" + labels(s->model, s->version) + ",limit=\"model_queue\"} " +
           std::to_string(s->shed.load()) + "\n";
  out += "tern_shed_total{model=\"\",version=\"\",limit=\"server_inflight\"} " +
         std::to_string(admission.shed()) + "\n";
  out +=
      "# HELP tern_inflight_requests Requests queued or running, server-wide.\n"
      "# TYPE tern_inflight_requests gauge\ntern_inflight_requests " +
      std::to_string(admission.inflight()) + "\n";
}

}  // namespace

HttpResponse Router::metrics() const {
  CacheCounters cache;
  if (cache_) cache = cache_->counters();
  std::string text = render_prometheus(stats_.all(), counters_, cache, repository_.load_failures());
  const auto snap = repository_.snapshot();
  std::vector<MonitoredVersion> versions;
  for (const auto& [name, state] : *snap)
    for (const auto& [v, lv] : state->versions) versions.push_back({name, v, lv->monitor});
  std::map<std::string, int64_t> ready;
  for (const auto& entry : repository_.index(false)) ready.emplace(entry.value("name", ""), 0);
  for (const auto& [name, state] : *snap)
    ready[name] = static_cast<int64_t>(state->versions.size());
  render_monitoring(text, versions, ready, watches_);
  render_release_metrics(text, *snap, stats_.all(), admission_);
  rollouts_.render(text);
  shadows_.render(text);
  render_process_metrics(text);
  return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(text), {}};
}

void Router::infer(HttpRequest& request, const std::string& model,
                   const std::optional<std::string>& version, Responder respond) {
  Resolved r = resolve(repository_, model, version, false);
  if (!version) {
    // A rollout's weights (or traffic's), a sticky key hashed onto them.
    const Weights weights = rollouts_.weights(*r.model);
    std::optional<std::string_view> key;
    if (auto h = request.header(r.model->options.sticky_header)) key = *h;
    r.version = r.model->choose(&weights, key);
    if (!r.version)
      throw HttpError(503, "model '" + model + "' has no ready version: " +
                               unavailable_reasons(repository_, model));
  }
  VersionStats& stats = *r.version->stats;
  const ModelOptions& opts = r.version->options;
  try {
    if (auto enc = request.header("Content-Encoding"); enc && *enc != "identity")
      throw HttpError(415, "Content-Encoding '" + std::string(*enc) +
                               "' is not supported; send the body uncompressed");
    std::optional<size_t> header_length;
    if (auto h = request.header("Inference-Header-Content-Length"))
      header_length = parse_header_length(*h);
    auto call = std::make_shared<InferCall>();
    call->version = r.version;
    call->request = parse_infer_request(request.body, header_length, r.version->schema);
    if (!call->request.input.features.empty())
      r.version->monitor->checks().check(call->request.input.features.data(), call->request.rows,
                                         r.version->schema.input_features(),
                                         r.version->schema.input_name);
    call->received = request.received;
    call->respond_to_client = respond;
    std::string().swap(request.body);  // the parsed copy is all that is needed from here on

    call->priority = opts.priority_of(call->request.priority);
    if (!admission_.try_enter(call->priority, opts.priority_levels))
      throw HttpError(429, "the server is at its limit of " + std::to_string(admission_.limit()) +
                               " requests in flight (server.max_inflight); retry later");
    call->gate = &admission_;
    if (call->request.timeout_us && *call->request.timeout_us > 0)
      call->deadline = call->received + std::chrono::microseconds(*call->request.timeout_us);
    call->primary_deadline = call->deadline;
    if (opts.timeout_ms > 0)
      call->primary_deadline = std::min(
          call->primary_deadline,
          call->received + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double, std::milli>(opts.timeout_ms)));
    // A fallback needs time of its own: the primary gets half of what the request allows
    // unless the model's timeout_ms leaves the fallback more.
    if (!opts.fallback_model.empty() && call->deadline != Clock::time_point::max() &&
        call->primary_deadline > call->received + (call->deadline - call->received) / 2)
      call->primary_deadline = call->received + (call->deadline - call->received) / 2;
    if (!opts.fallback_model.empty()) call->fallback_input = call->request.input;

    if (cache_ && opts.cache) {
      const auto lookup = Clock::now();
      call->cache_key =
          ResponseCache::key(model, r.version->version, call->request.rows, call->request.input);
      if (auto hit = cache_->find(call->cache_key)) {
        stats.cache_hit.add(ns_since(lookup));
        call->cache_key.clear();  // nothing to insert
        finish(call, JobResult{*hit, "", false, 0, 0, 0, 0, std::move(call->request.input)});
        return;
      }
      stats.cache_miss.add(ns_since(lookup));
    }
    call->permit = r.version->breaker->acquire();
    if (!call->permit.allowed) {
      fail_over(
          call, "breaker", 503,
          version_label(*r.version) + ": its circuit breaker is open after failures; retry later");
      return;
    }
    submit_primary(call);
  } catch (const InputValueError& e) {
    stats.count_rejected(e.reason());
    stats.fail.add(ns_since(request.received));
    throw;
  } catch (const HttpError& e) {
    stats.fail.add(ns_since(request.received));
    throw;
  }
}

void Router::submit_primary(const std::shared_ptr<InferCall>& call) {
  LoadedVersion& lv = *call->version;
  Job job;
  job.rows = call->request.rows;
  job.input = std::move(call->request.input);
  job.deadline = call->primary_deadline;
  job.priority = call->priority;
  job.done = [this, call](JobResult&& result) {
    // Off the worker thread: encoding a large JSON answer must not hold up the next batch.
    post_([this, call, result = std::move(result)]() mutable {
      try {
        finish(call, std::move(result));
      } catch (const std::exception& e) {
        spdlog::error("{}: encoding the answer failed: {}", version_label(*call->version),
                      e.what());
        if (call->claim(InferCall::Phase::primary, InferCall::Phase::answered))
          call->respond(error_response(500, std::string("internal error: ") + e.what()));
      }
    });
  };
  call->submitted = Clock::now();
  const int64_t limit = lv.batcher->limit_for(call->priority);
  const SubmitResult submitted = lv.batcher->submit(std::move(job));
  if (submitted != SubmitResult::queued) lv.breaker->release(call->permit);
  switch (submitted) {
    case SubmitResult::queued:
      break;
    case SubmitResult::full:
      lv.stats->shed.fetch_add(1, std::memory_order_relaxed);
      throw HttpError(429, version_label(lv) + ": the queue is full for priority " +
                               std::to_string(call->priority) + " (" + std::to_string(limit) +
                               " requests waiting; max_queue_size " +
                               std::to_string(lv.options.max_queue_size) + "); retry later");
    case SubmitResult::stopped:
      throw HttpError(503, version_label(lv) + " is being unloaded; retry");
  }
  if (call->primary_deadline != Clock::time_point::max()) {
    std::weak_ptr<InferCall> weak = call;
    const auto id = deadlines_.schedule(call->primary_deadline, [this, weak] {
      if (auto c = weak.lock()) post_([this, c] { on_deadline(c); });
    });
    std::unique_lock lock(call->mu);
    if (call->phase == InferCall::Phase::primary) {
      call->timer = id;
    } else {  // answered already
      lock.unlock();
      deadlines_.cancel(id);
    }
  }
}

namespace {

void record_breaker(CircuitBreaker& breaker, bool& recorded, const CircuitBreaker::Permit& permit,
                    bool failed, Clock::time_point submitted) {
  if (recorded) return;
  recorded = true;
  breaker.record(permit, failed, std::chrono::duration<double>(Clock::now() - submitted).count());
}

}  // namespace

void Router::on_deadline(const std::shared_ptr<InferCall>& call) {
  LoadedVersion& lv = *call->version;
  {
    std::lock_guard lock(call->mu);
    if (call->phase != InferCall::Phase::primary) return;
    call->timer.reset();
    record_breaker(*lv.breaker, call->breaker_recorded, call->permit, true, call->submitted);
  }
  lv.stats->deadline_in_flight.fetch_add(1, std::memory_order_relaxed);
  fail_over(call, "deadline", 504,
            version_label(lv) + ": no answer within the deadline of " +
                ms_text(call->primary_deadline - call->received) +
                " ms (it was still queued or running)");
}

void Router::fail_over(const std::shared_ptr<InferCall>& call, const char* reason, int status,
                       const std::string& message) {
  LoadedVersion& lv = *call->version;
  VersionStats& stats = *lv.stats;
  stats.server_failures.fetch_add(1, std::memory_order_relaxed);
  stats.fail.add(ns_since(call->received));
  if (status >= 500) spdlog::error("{}", message);
  auto give_up = [&](const std::string& text) {
    HttpResponse response = error_response(status, text);
    if (status == 503) response.headers.emplace_back("Retry-After", "1");
    call->respond(std::move(response));
  };
  const ModelOptions& o = lv.options;
  if (o.fallback_model.empty()) {
    if (!call->claim(InferCall::Phase::primary, InferCall::Phase::answered)) return;
    if (auto t = call->take_timer()) deadlines_.cancel(*t);
    give_up(message);
    return;
  }
  if (!call->claim(InferCall::Phase::primary, InferCall::Phase::fallback)) return;
  if (auto t = call->take_timer()) deadlines_.cancel(*t);
  // The fallback: MODEL:VERSION, or the version that model would choose.
  std::shared_ptr<LoadedVersion> fb;
  std::string why_not;
  const auto snap = repository_.snapshot();
  auto it = snap->find(o.fallback_model);
  if (it == snap->end()) {
    why_not = "it is not loaded";
  } else if (o.fallback_version) {
    auto v = it->second->versions.find(o.fallback_version);
    if (v != it->second->versions.end())
      fb = v->second;
    else
      why_not = "it has no ready version " + std::to_string(o.fallback_version);
  } else {
    const Weights weights = rollouts_.weights(*it->second);
    fb = it->second->choose(&weights);
    if (!fb) why_not = "it has no ready version";
  }
  if (fb && fb == call->version) fb.reset(), why_not = "it is the version that failed";
  if (fb) why_not = incompatibility(lv.schema, fb->schema);
  const std::string fb_name =
      "fallback '" + o.fallback_model +
      (o.fallback_version ? ":" + std::to_string(o.fallback_version) : std::string()) + "'";
  if (!why_not.empty() || !fb) {
    if (call->claim(InferCall::Phase::fallback, InferCall::Phase::answered))
      give_up(message + "; the " + fb_name + " cannot answer: " + why_not);
    return;
  }
  if (std::string_view(reason) == "deadline")
    stats.fallback_deadline.fetch_add(1, std::memory_order_relaxed);
  else if (std::string_view(reason) == "breaker")
    stats.fallback_breaker.fetch_add(1, std::memory_order_relaxed);
  else
    stats.fallback_error.fetch_add(1, std::memory_order_relaxed);
  call->fallback = fb;
  call->fallback_reason = reason;
  Job job;
  job.rows = call->request.rows;
  job.input = std::move(call->fallback_input);
  job.deadline = call->deadline;
  job.priority = fb->options.priority_of(call->request.priority);
  job.done = [this, call](JobResult&& result) {
    post_([this, call, result = std::move(result)]() mutable {
      finish_fallback(call, std::move(result));
    });
  };
  if (fb->batcher->submit(std::move(job)) != SubmitResult::queued) {
    if (call->claim(InferCall::Phase::fallback, InferCall::Phase::answered))
      give_up(message + "; the " + fb_name + " is full or unloading");
    return;
  }
  if (call->deadline != Clock::time_point::max()) {
    std::weak_ptr<InferCall> weak = call;
    const std::string text = message + "; the " + fb_name + " did not answer within the deadline";
    const auto id = deadlines_.schedule(call->deadline, [this, weak, text] {
      auto c = weak.lock();
      if (!c) return;
      post_([c, text] {
        if (c->claim(InferCall::Phase::fallback, InferCall::Phase::answered))
          c->respond(error_response(504, text));
      });
    });
    std::unique_lock lock(call->mu);
    if (call->phase == InferCall::Phase::fallback) {
      call->timer = id;
    } else {
      lock.unlock();
      deadlines_.cancel(id);
    }
  }
}

void Router::finish_fallback(const std::shared_ptr<InferCall>& call, JobResult&& result) {
  if (!call->claim(InferCall::Phase::fallback, InferCall::Phase::answered)) return;
  if (auto t = call->take_timer()) deadlines_.cancel(*t);
  LoadedVersion& fb = *call->fallback;
  const std::string primary = version_label(*call->version);
  std::string error = result.error;
  if (result.expired) error = "its deadline passed in the queue";
  if (error.empty())
    if (auto row = non_finite_row(result.output, fb.schema.output_features))
      error = "it answered a non-finite value in row " + std::to_string(*row);
  if (!error.empty()) {
    fb.stats->fail.add(ns_since(call->received));
    call->respond(error_response(result.expired ? 504 : 500,
                                 primary + " failed (" + call->fallback_reason +
                                     ") and its fallback " + version_label(fb) + " too: " + error));
    return;
  }
  EncodedResponse encoded =
      encode_infer_response(fb.model, fb.version, call->request, fb.schema, result.output.data());
  HttpResponse response{200, "application/json", std::move(encoded.body), {}};
  if (encoded.header_length) {
    response.content_type = "application/octet-stream";
    response.headers.emplace_back("Inference-Header-Content-Length",
                                  std::to_string(*encoded.header_length));
  }
  // Who answered is in model_name / model_version; this says why it was not the primary.
  response.headers.emplace_back("X-Tern-Fallback", call->fallback_reason);
  response.headers.emplace_back(
      "X-Tern-Fallback-For", call->version->model + ":" + std::to_string(call->version->version));
  const uint64_t total = ns_since(call->received);
  fb.stats->success.add(total);
  fb.stats->request_seconds.observe_ns(total);
  fb.stats->inference_count.fetch_add(static_cast<uint64_t>(call->request.rows),
                                      std::memory_order_relaxed);
  call->respond(std::move(response));
}

void Router::finish(const std::shared_ptr<InferCall>& call_ptr, JobResult&& result) {
  InferCall& call = *call_ptr;
  LoadedVersion& lv = *call.version;
  VersionStats& stats = *lv.stats;
  std::optional<int64_t> bad_row;
  if (result.error.empty() && !result.expired)
    bad_row = non_finite_row(result.output, lv.schema.output_features);
  const bool failed = !result.error.empty() || result.expired || bad_row.has_value();
  {
    std::lock_guard lock(call.mu);
    if (call.phase != InferCall::Phase::primary) return;  // answered at its deadline already
    record_breaker(*lv.breaker, call.breaker_recorded, call.permit, failed, call.submitted);
  }
  if (result.expired) {
    stats.deadline_queue.fetch_add(1, std::memory_order_relaxed);
    fail_over(call_ptr, "deadline", 504,
              version_label(lv) + ": no answer within the deadline of " +
                  ms_text(call.primary_deadline - call.received) +
                  " ms (it expired in the queue, unrun)");
    return;
  }
  if (!result.error.empty()) {
    fail_over(call_ptr, "error", 500, version_label(lv) + ": " + result.error);
    return;
  }
  if (bad_row) {
    fail_over(call_ptr, "error", 500,
              version_label(lv) + ": the model answered a non-finite value (NaN or inf) in row " +
                  std::to_string(*bad_row));
    return;
  }
  if (!call.claim(InferCall::Phase::primary, InferCall::Phase::answered)) return;
  if (auto t = call.take_timer()) deadlines_.cancel(*t);
  if (!call.cache_key.empty())
    cache_->insert(std::move(call.cache_key),
                   std::make_shared<const std::vector<float>>(result.output));
  EncodedResponse encoded =
      encode_infer_response(lv.model, lv.version, call.request, lv.schema, result.output.data());
  HttpResponse response{200, "application/json", std::move(encoded.body), {}};
  if (encoded.header_length) {
    response.content_type = "application/octet-stream";
    response.headers.emplace_back("Inference-Header-Content-Length",
                                  std::to_string(*encoded.header_length));
  }
  const uint64_t total = ns_since(call.received);
  stats.success.add(total);
  stats.request_seconds.observe_ns(total);
  stats.inference_count.fetch_add(static_cast<uint64_t>(call.request.rows),
                                  std::memory_order_relaxed);
  // Kept for feedback before the answer goes out: a client may post the ground truth as soon
  // as it has the answer.
  const std::shared_ptr<ModelWatch> model_watch = watches_.get(lv.model, *lv.monitor);
  std::vector<float> predicted;
  const bool watched = lv.monitor->drift() || model_watch->log || call.request.id;
  if (watched && !lv.schema.tokens())
    predicted =
        lv.monitor->predictions(result.output.data(), call.request.rows, lv.schema.output_features);
  if (call.request.id && !lv.schema.tokens())
    model_watch->feedback->record(*call.request.id, lv.version, call.request.rows, predicted);
  call.respond(std::move(response));
  try {
    mirror(call, result);
  } catch (const std::exception& e) {
    spdlog::error("{}: mirroring the request failed: {}", version_label(lv), e.what());
  }
  if (!watched) return;
  try {
    watch(call, result, *model_watch, predicted);
  } catch (const std::exception& e) {
    spdlog::error("model '{}' version {}: monitoring the answer failed: {}", lv.model, lv.version,
                  e.what());
  }
}

// After the answer went out: a copy of the request to the challenger ([shadow], or the canary
// of a rollout with mirror = true), compared with the primary's answer when it comes back.
void Router::mirror(const InferCall& call, const JobResult& result) {
  const LoadedVersion& lv = *call.version;
  const ModelOptions& o = lv.options;
  std::string target_model = o.shadow.model.empty() ? lv.model : o.shadow.model;
  int64_t target_version = o.shadow.version;
  double fraction = o.shadow.fraction;
  if (!o.shadow.active()) {
    if (!o.rollout.mirror) return;
    target_model = lv.model;
    target_version = rollouts_.mirror_target(lv.model);
    fraction = 1;
    if (!target_version) return;
  }
  if (fraction < 1) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    if (std::uniform_real_distribution<double>(0, 1)(rng) >= fraction) return;
  }
  const auto snap = repository_.snapshot();
  auto it = snap->find(target_model);
  if (it == snap->end()) return;
  std::shared_ptr<LoadedVersion> target;
  if (target_version) {
    auto v = it->second->versions.find(target_version);
    if (v == it->second->versions.end()) return;
    target = v->second;
  } else {
    const Weights weights = rollouts_.weights(*it->second);
    target = it->second->choose(&weights);
  }
  if (!target || target == call.version) return;  // the challenger answered this one itself
  if (!incompatibility(lv.schema, target->schema).empty()) return;
  auto shadow = shadows_.get(lv.model, target->model, target->version);
  auto primary_out = std::make_shared<const std::vector<float>>(result.output);
  const int64_t rows = call.request.rows, features = lv.schema.output_features;
  Job job;
  job.rows = rows;
  job.input = result.input;
  job.priority = target->options.priority_levels;  // mirrored work yields to real requests
  job.deadline = Clock::now() + std::chrono::seconds(30);
  const auto start = Clock::now();
  job.done = [shadow, primary_out, rows, features, start](JobResult&& r) {
    shadow->latency.observe_ns(ns_since(start));
    if (!r.error.empty() || r.expired || non_finite_row(r.output, features) ||
        r.output.size() != primary_out->size()) {
      shadow->errors.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    shadow->compare(primary_out->data(), r.output.data(), rows, features);
  };
  if (target->batcher->submit(std::move(job)) == SubmitResult::queued)
    shadow->mirrored.fetch_add(1, std::memory_order_relaxed);
  else
    shadow->dropped.fetch_add(1, std::memory_order_relaxed);
}

// After the answer went out, so no client waits for it: the rows into the drift window, the
// request into the request log.
void Router::watch(const InferCall& call, const JobResult& result, ModelWatch& model_watch,
                   const std::vector<float>& predicted) {
  const LoadedVersion& lv = *call.version;
  const int64_t rows = call.request.rows;
  lv.monitor->observe(result.input, rows, lv.schema.input_features(), predicted);
  if (model_watch.log && model_watch.sample_request())
    model_watch.log->write_request(lv.model, lv.version, call.request.id, rows, result.input,
                                   lv.schema.input_features(), result.output.data(),
                                   lv.schema.output_features);
}

HttpResponse Router::feedback(HttpRequest& request, const std::string& model) {
  require_method(request, "POST");
  const Resolved r = resolve(repository_, model, std::nullopt, false);
  if (!r.version) throw HttpError(503, "model '" + model + "' has no ready version");
  if (r.version->schema.tokens())
    throw HttpError(400, "model '" + model + "': feedback is for feature models");
  const json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    throw HttpError(400,
                    "the feedback request must be a JSON object: {\"id\": ..., \"label\": ...} "
                    "or {\"feedback\": [items]}");
  const std::shared_ptr<ModelWatch> w = watches_.get(model, *r.version->monitor);
  // Every item is checked before any is joined: a bad one leaves nothing half applied.
  std::vector<FeedbackJoin::Item> items;
  auto add = [&](const json& item) {
    items.push_back(
        w->feedback->parse(item, r.version->schema.labels, r.version->schema.output_features));
  };
  if (auto list = body.find("feedback"); list != body.end()) {
    if (!list->is_array()) throw HttpError(400, "'feedback' must be an array of items");
    for (const auto& item : *list) add(item);
  } else {
    add(body);
  }
  const FeedbackJoin::Result result = w->feedback->join(items);
  if (w->log)
    for (const auto& item : items) w->log->write_feedback(model, item.id, item.truth);
  return json_response(
      {{"matched", result.matched}, {"unmatched", result.unmatched}, {"late", result.late}});
}

HttpResponse Router::drift(const std::string& model, const std::optional<std::string>& version) {
  const Resolved r = resolve(repository_, model, version, false);
  if (!r.version) throw HttpError(503, "model '" + model + "' has no ready version");
  const DriftWindow* d = r.version->monitor->drift();
  if (!d)
    throw HttpError(404, "model '" + model + "' version " + std::to_string(r.version->version) +
                             " measures no drift (drift.enabled = false, or a token model)");
  json body = drift_report_json(*d, d->report());
  body["model_name"] = model;
  body["model_version"] = std::to_string(r.version->version);
  return json_response(body);
}

}  // namespace tern::serve
