#pragma once
// Sampling text from a character-level language model (an export whose input is INT32 token
// ids [T] and whose output is [T, vocab] logits), one token at a time.
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "tern/infer/inference_model.h"

namespace tern {

struct SamplerOptions {
  double temperature = 1.0;  // > 0; lower is more conservative
  int64_t top_k = 0;         // sample among the k likeliest; 0 = all
  uint64_t seed = 0;         // the same seed gives the same text
};

class TextSampler {
 public:
  // InputError naming `where` when the model is no character-level language model or the
  // options are out of range.
  TextSampler(InferenceModel& model, SamplerOptions options, const std::string& where);
  // The ids of a text's characters; InputError naming a character outside the vocabulary.
  std::vector<int32_t> encode(const std::string& text) const;
  const std::string& token_text(int32_t id) const { return vocab_[id]; }
  // Appends the next token to `tokens` (the model sees the last T of them) and returns it.
  int32_t next(std::vector<int32_t>& tokens);

 private:
  InferenceModel& model_;
  SamplerOptions options_;
  int64_t context_ = 0, vocab_size_ = 0;
  std::vector<std::string> vocab_;
  std::map<std::string, int32_t> ids_;
  std::mt19937_64 rng_;
  std::vector<int32_t> window_;
  std::vector<float> logits_;
  std::vector<double> p_;
  std::vector<int64_t> order_;
};

}  // namespace tern
