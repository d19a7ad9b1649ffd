#include "tern/infer/sampler.h"

#include <algorithm>
#include <cmath>

#include "tern/base/error.h"
#include "tern/io/dataset.h"

namespace tern {

TextSampler::TextSampler(InferenceModel& model, SamplerOptions options, const std::string& where)
    : model_(model), options_(options), rng_(options.seed) {
  if (!(options_.temperature > 0)) throw InputError("temperature must be > 0");
  if (options_.top_k < 0) throw InputError("top-k must be >= 0");
  const ExportInfo& info = model.info();
  if (info.input_datatype != "INT32" || info.input_shape.size() != 1)
    throw InputError(where + " is not a language model (its input is " + info.input_datatype + " " +
                     shape_str(info.input_shape) + ")");
  context_ = info.input_shape[0];
  vocab_ = info.labels;
  vocab_size_ = static_cast<int64_t>(vocab_.size());
  if (vocab_size_ != model.output_features() / context_)
    throw InputError(where + ": " + std::to_string(vocab_size_) + " labels for " +
                     std::to_string(model.output_features() / context_) + " outputs per position");
  for (int64_t i = 0; i < vocab_size_; ++i) ids_[vocab_[i]] = static_cast<int32_t>(i);
  window_.resize(context_);
  logits_.resize(context_ * vocab_size_);
  p_.resize(vocab_size_);
  order_.resize(vocab_size_);
}

std::vector<int32_t> TextSampler::encode(const std::string& text) const {
  std::vector<int32_t> tokens;
  for (const std::string& ch : utf8_characters(text)) {
    auto it = ids_.find(ch);
    if (it == ids_.end())
      throw InputError("character '" + ch + "' is not in the model's vocabulary");
    tokens.push_back(it->second);
  }
  return tokens;
}

int32_t TextSampler::next(std::vector<int32_t>& tokens) {
  if (tokens.empty()) throw InputError("sampling needs at least one token to continue");
  const int64_t T = context_, V = vocab_size_;
  // The last T tokens, left-aligned: causal attention means later (padding) positions do not
  // change the prediction at position n - 1.
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(tokens.size()), T);
  std::fill(window_.begin(), window_.end(), 0);
  std::copy(tokens.end() - n, tokens.end(), window_.begin());
  model_.predict_tokens(window_.data(), 1, logits_.data());
  const float* z = logits_.data() + (n - 1) * V;
  for (int64_t i = 0; i < V; ++i) order_[i] = i;
  const int64_t k = options_.top_k > 0 ? std::min(options_.top_k, V) : V;
  std::partial_sort(order_.begin(), order_.begin() + k, order_.end(),
                    [&](int64_t a, int64_t b) { return z[a] > z[b]; });
  const double zmax = z[order_[0]];
  double sum = 0;
  for (int64_t i = 0; i < k; ++i)
    sum += (p_[i] = std::exp((z[order_[i]] - zmax) / options_.temperature));
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  int64_t pick = k - 1;
  for (int64_t i = 0; i < k; ++i)
    if ((u -= p_[i]) < 0) {
      pick = i;
      break;
    }
  const int32_t next = static_cast<int32_t>(order_[pick]);
  tokens.push_back(next);
  return next;
}

}  // namespace tern
