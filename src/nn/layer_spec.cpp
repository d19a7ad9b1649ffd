// A layer's line of the config ("conv2d out=16 k=3 pad=1"): its type and key=value settings.
#include <sstream>

#include "tern/base/error.h"
#include "tern/nn/layers.h"

namespace tern {

LayerSpec LayerSpec::parse(const std::string& text, int index) {
  LayerSpec spec;
  spec.text_ = text;
  spec.index_ = index;
  std::istringstream in(text);
  in >> spec.type_;
  if (spec.type_.empty()) throw InputError("layer " + std::to_string(index) + " is empty");
  std::string token;
  while (in >> token) {
    auto eq = token.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == token.size())
      throw InputError(spec.where() + ": argument '" + token + "' is not key=value");
    auto key = token.substr(0, eq);
    if (spec.args_.count(key))
      throw InputError(spec.where() + ": argument '" + key + "' given twice");
    spec.args_[key] = token.substr(eq + 1);
  }
  return spec;
}

std::string LayerSpec::where() const {
  return "model.layer " + std::to_string(index_) + " (" + text_ + ")";
}

const std::string* LayerSpec::find(const std::string& key) {
  auto it = args_.find(key);
  if (it == args_.end()) return nullptr;
  used_[key] = true;
  return &it->second;
}

int64_t LayerSpec::get_int(const std::string& key, int64_t fallback) {
  const std::string* v = find(key);
  if (!v) return fallback;
  size_t pos = 0;
  int64_t out = 0;
  try {
    out = std::stoll(*v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v->size()) throw InputError(where() + ": " + key + "=" + *v + " is not an integer");
  return out;
}

int64_t LayerSpec::require_int(const std::string& key) {
  if (!args_.count(key)) throw InputError(where() + ": missing argument " + key + "=N");
  return get_int(key, 0);
}

float LayerSpec::get_float(const std::string& key, float fallback) {
  const std::string* v = find(key);
  if (!v) return fallback;
  size_t pos = 0;
  float out = 0;
  try {
    out = std::stof(*v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v->size()) throw InputError(where() + ": " + key + "=" + *v + " is not a number");
  return out;
}

std::string LayerSpec::get_string(const std::string& key, const std::string& fallback) {
  const std::string* v = find(key);
  return v ? *v : fallback;
}

bool LayerSpec::get_bool(const std::string& key, bool fallback) {
  const std::string* v = find(key);
  if (!v) return fallback;
  if (*v == "true" || *v == "1" || *v == "yes") return true;
  if (*v == "false" || *v == "0" || *v == "no") return false;
  throw InputError(where() + ": " + key + "=" + *v + " is not true or false");
}

Shape LayerSpec::require_shape(const std::string& key) {
  if (!args_.count(key)) throw InputError(where() + ": missing argument " + key + "=AxBxC");
  const std::string text = *find(key);
  Shape out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find('x', start), text.size());
    const std::string part = text.substr(start, end - start);
    size_t pos = 0;
    int64_t v = 0;
    try {
      v = std::stoll(part, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (part.empty() || pos != part.size() || v <= 0)
      throw InputError(where() + ": " + key + "=" + text +
                       " is not a shape (positive sizes joined by x, e.g. 1x8x8)");
    out.push_back(v);
    start = end + 1;
  }
  return out;
}

void LayerSpec::check_all_used() const {
  for (const auto& [key, value] : args_)
    if (!used_.count(key))
      throw InputError(where() + ": unknown argument '" + key + "' for layer type " + type_);
}

void Layer::bind(std::vector<Tensor> params, std::vector<Tensor> grads,
                 std::vector<Tensor> compute) {
  params_ = std::move(params);
  grads_ = std::move(grads);
  compute_params_ = std::move(compute);
  on_bind();
}

}  // namespace tern
