#include <cblas.h>

#include "cpu/cpu_ops.h"

namespace tern::cpu {

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  // Row-major leading dimensions are the stored row lengths.
  const int lda = static_cast<int>(trans_a ? m : k);
  const int ldb = static_cast<int>(trans_b ? k : n);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, std::max(lda, 1), b, std::max(ldb, 1), beta, c,
              static_cast<int>(n));
}

}  // namespace tern::cpu
