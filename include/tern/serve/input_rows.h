#pragma once
// The rows of a request or a batch on their way to the model, typed as the model takes them.
#include <cstdint>
#include <string>
#include <vector>

namespace tern::serve {

// Token models: a row shorter than the context is right-padded with this value (no token id is
// negative), so the model's runner can tell each row's own length.
constexpr int32_t kTokenPad = -1;

// Rows as the model takes them, row-major: FP32 features (rows x input_features), or for token
// models INT32 ids (rows x context, each row right-padded with kTokenPad). One of the two is used;
// token ids never pass through floats.
struct InputRows {
  std::vector<float> features;
  std::vector<int32_t> tokens;
  size_t values() const { return features.size() + tokens.size(); }
  // Appends other's rows (of the same kind).
  void append(const InputRows& other) {
    features.insert(features.end(), other.features.begin(), other.features.end());
    tokens.insert(tokens.end(), other.tokens.begin(), other.tokens.end());
  }
  // The rows' bytes, for cache keys: the kind, then the values.
  void append_bytes(std::string& out) const {
    out.push_back(tokens.empty() ? 'f' : 'i');
    out.append(reinterpret_cast<const char*>(features.data()), features.size() * sizeof(float));
    out.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(int32_t));
  }
};

}  // namespace tern::serve
