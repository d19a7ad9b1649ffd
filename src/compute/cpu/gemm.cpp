#include <cblas.h>

#include <algorithm>

#include "cpu/cpu_ops.h"
#include "cpu/parallel.h"

namespace tern::cpu {
namespace {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(std::max<int64_t>(lda, 1)), b,
              static_cast<int>(std::max<int64_t>(ldb, 1)), beta, c,
              static_cast<int>(std::max<int64_t>(ldc, 1)));
}

}  // namespace

// OpenBLAS runs single-threaded (configure_cpu_threads); large GEMMs are split here into blocks
// of C rows (or columns, when C is short and wide) on the op threads. One pool for every
// parallel op keeps a 2-core machine from running BLAS's spinning workers beside tern's.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  // Row-major leading dimensions are the stored row lengths.
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  constexpr double kMinFlopsPerThread = 1 << 20;
  const int threads = op_threads();
  const double flops = 2.0 * static_cast<double>(m) * n * k;
  if (threads == 1 || flops < 2 * kMinFlopsPerThread) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, n);
    return;
  }
  // Blocks of 16 rows or columns at least, a few per thread.
  if (m >= n || m >= 16 * threads) {
    parallel_for(m, std::max<int64_t>(16, m / (4 * threads)), [&](int64_t i0, int64_t i1) {
      const float* ab = trans_a ? a + i0 : a + i0 * lda;
      sgemm(trans_a, trans_b, i1 - i0, n, k, alpha, ab, lda, b, ldb, beta, c + i0 * n, n);
    });
  } else {
    parallel_for(n, std::max<int64_t>(16, n / (4 * threads)), [&](int64_t j0, int64_t j1) {
      const float* bb = trans_b ? b + j0 * ldb : b + j0;
      sgemm(trans_a, trans_b, m, j1 - j0, k, alpha, a, lda, bb, ldb, beta, c + j0, n);
    });
  }
}

}  // namespace tern::cpu
