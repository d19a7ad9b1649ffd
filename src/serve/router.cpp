#include <charconv>

#include <spdlog/spdlog.h>

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
  Responder respond;
};

Router::Router(ModelRepository& repository, StatsRegistry& stats, const ServerCounters& counters,
               ResponseCache* cache, std::function<bool()> ready,
               std::function<void(std::function<void()>)> post)
    : repository_(repository),
      stats_(stats),
      counters_(counters),
      cache_(cache),
      ready_(std::move(ready)),
      post_(std::move(post)) {}

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
    if (e.status() == 503) response.headers.emplace_back("Retry-After", "1");
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
    return json_response({{"name", "tern"},
                          {"version", version_string()},
                          {"extensions",
                           {"binary_tensor_data", "classification", "model_configuration",
                            "model_repository", "statistics", "tern_monitoring"}}});
  }
  if (n == 3 && seg[1] == "health" && (seg[2] == "live" || seg[2] == "ready")) {
    require_method(request, "GET");
    if (seg[2] == "ready" && !ready_()) throw HttpError(503, "the server is not ready");
    return {200, "text/plain", "", {}};
  }
  if (seg[1] == "repository") {
    require_method(request, "POST");
    if (n == 3 && seg[2] == "index") {
      bool ready_only = false;
      if (!request.body.empty()) {
        const json body = json::parse(request.body, nullptr, false);
        if (!body.is_object()) throw HttpError(400, "the index request must be a JSON object");
        if (auto it = body.find("ready"); it != body.end()) {
          if (!it->is_boolean())
            throw HttpError(400, "index request: 'ready' must be true or false");
          ready_only = it->get<bool>();
        }
      }
      return json_response(repository_.index(ready_only));
    }
    if (n == 5 && seg[2] == "models" && (seg[4] == "load" || seg[4] == "unload"))
      throw HttpError(400, "explicit model " + seg[4] +
                               " is not allowed: the repository is polled (change the files)");
  }
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
  render_process_metrics(text);
  return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(text), {}};
}

void Router::infer(HttpRequest& request, const std::string& model,
                   const std::optional<std::string>& version, Responder respond) {
  const Resolved r = resolve(repository_, model, version, true);
  VersionStats& stats = *r.version->stats;
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
    call->respond = respond;
    std::string().swap(request.body);  // the parsed copy is all that is needed from here on

    if (cache_ && r.version->options.cache) {
      const auto lookup = Clock::now();
      call->cache_key =
          ResponseCache::key(model, r.version->version, call->request.rows, call->request.input);
      if (auto hit = cache_->find(call->cache_key)) {
        stats.cache_hit.add(ns_since(lookup));
        call->cache_key.clear();  // nothing to insert
        finish(*call, JobResult{*hit, "", 0, 0, 0, 0, std::move(call->request.input)});
        return;
      }
      stats.cache_miss.add(ns_since(lookup));
    }
    Job job;
    job.rows = call->request.rows;
    job.input = std::move(call->request.input);
    job.done = [this, call](JobResult&& result) {
      // Off the worker thread: encoding a large JSON answer must not hold up the next batch.
      post_([this, call, result = std::move(result)]() mutable {
        try {
          finish(*call, std::move(result));
        } catch (const std::exception& e) {
          spdlog::error("model '{}': encoding the answer failed: {}", call->version->model,
                        e.what());
          call->respond(error_response(500, std::string("internal error: ") + e.what()));
        }
      });
    };
    if (!r.version->batcher->submit(std::move(job)))
      throw HttpError(503, "model '" + model + "' version " + std::to_string(r.version->version) +
                               ": the queue is full (max_queue_size " +
                               std::to_string(r.version->options.max_queue_size) +
                               "); retry later");
  } catch (const InputValueError& e) {
    stats.count_rejected(e.reason());
    stats.fail.add(ns_since(request.received));
    throw;
  } catch (const HttpError&) {
    stats.fail.add(ns_since(request.received));
    throw;
  }
}

void Router::finish(InferCall& call, JobResult&& result) {
  LoadedVersion& lv = *call.version;
  VersionStats& stats = *lv.stats;
  if (!result.error.empty()) {
    stats.fail.add(ns_since(call.received));
    spdlog::error("model '{}' version {}: {}", lv.model, lv.version, result.error);
    call.respond(error_response(500, result.error));
    return;
  }
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
  if (!watched) return;
  try {
    watch(call, result, *model_watch, predicted);
  } catch (const std::exception& e) {
    spdlog::error("model '{}' version {}: monitoring the answer failed: {}", lv.model, lv.version,
                  e.what());
  }
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
