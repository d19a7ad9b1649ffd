// Token (+ position) embeddings on the CPU: rows gathered from the table, gradients added back
// in position order.
#include <cstring>

#include "cpu/cpu_ops.h"

namespace tern::cpu {

int64_t embedding_forward(const int32_t* ids, const float* table, const float* positions,
                          float* out, int64_t n, int64_t seq, int64_t vocab, int64_t dim) {
  for (int64_t i = 0; i < n * seq; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) return i;
    float* o = out + i * dim;
    std::memcpy(o, table + ids[i] * dim, sizeof(float) * dim);
    if (positions) {
      const float* p = positions + (i % seq) * dim;
      for (int64_t j = 0; j < dim; ++j) o[j] += p[j];
    }
  }
  return -1;
}

void embedding_backward(const int32_t* ids, const float* dout, float* dtable, float* dpositions,
                        int64_t n, int64_t seq, int64_t vocab, int64_t dim) {
  for (int64_t i = 0; i < n * seq; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) continue;  // the forward pass reported it
    const float* g = dout + i * dim;
    float* d = dtable + ids[i] * dim;
    for (int64_t j = 0; j < dim; ++j) d[j] += g[j];
    if (dpositions) {
      float* dp = dpositions + (i % seq) * dim;
      for (int64_t j = 0; j < dim; ++j) dp[j] += g[j];
    }
  }
}

}  // namespace tern::cpu
