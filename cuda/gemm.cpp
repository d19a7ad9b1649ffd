// GEMMs through cuBLASLt. tern's tensors are row-major and cuBLAS is column-major: a row-major
// C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, so B goes first and nothing is
// copied. Descriptors, layouts and the heuristic's choice are cached per shape.
#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "check.h"
#include "cuda_ops.h"
#include "runtime.h"

namespace tern::cuda {
namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    default:
      throw std::invalid_argument(std::string("cuda gemm: unsupported dtype ") + dtype_name(t));
  }
}

// The largest power of two up to 256 that divides the address: cuBLASLt's kernels differ by the
// alignment they may assume, and parameter views are only 32- or 64-byte aligned.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align /= 2;
  return align;
}

using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int, int, bool, bool, uint32_t,
                       uint32_t, uint32_t>;

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

std::string shape_text(int64_t m, int64_t n, int64_t k, bool ta, bool tb, DType ab, DType ct) {
  return "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
         (ta ? " A^T" : "") + (tb ? " B^T" : "") + " " + dtype_name(ab) + "->" + dtype_name(ct);
}

Plan make_plan(bool ta, bool tb, int64_t m, int64_t n, int64_t k, DType ab, DType ct, bool bias,
               bool tf32, uint32_t align_ab, uint32_t align_c) {
  Plan p;
  const cublasComputeType_t compute =
      ab == DType::f32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  TERN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
  // cuBLAS operand A is our b, operand B is our a (see the file comment).
  cublasOperation_t op_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  TERN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  TERN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  if (bias) {
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    TERN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    cudaDataType_t bt = cuda_type(ct);
    TERN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                     &bt, sizeof bt));
  }
  // Stored row-major [r, c] is column-major [c, r] with leading dimension c.
  const int64_t b_rows = tb ? k : n, b_cols = tb ? n : k;  // our b as stored, column-major view
  const int64_t a_rows = ta ? m : k, a_cols = ta ? k : m;
  TERN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.la, cuda_type(ab), b_rows, b_cols, b_rows));
  TERN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lb, cuda_type(ab), a_rows, a_cols, a_rows));
  TERN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lc, cuda_type(ct), n, m, n));

  cublasLtMatmulPreference_t pref;
  TERN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws_bytes = 0;
  blaslt_workspace(&ws_bytes);
  TERN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
  for (auto [attr, value] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_ab},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_ab},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}})
    TERN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof value));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(blaslt(), p.desc, p.la, p.lb, p.lc, p.lc,
                                                           pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(p.la);
    cublasLtMatrixLayoutDestroy(p.lb);
    cublasLtMatrixLayoutDestroy(p.lc);
    cublasLtMatmulDescDestroy(p.desc);
    throw std::runtime_error(
        "cuBLASLt has no algorithm for " + shape_text(m, n, k, ta, tb, ab, ct) +
        (bias ? " with a bias epilogue" : "") + " (" + cublasGetStatusString(st) + ")");
  }
  p.algo = result.algo;
  return p;
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          const void* b, DType ab, float beta, void* c, DType ct, const void* bias) {
  if (m == 0 || n == 0) return;
  // cuBLASLt's bias epilogue assumes an aligned bias vector: otherwise add it separately.
  if (bias && alignment_of(bias) < 16) {
    gemm(trans_a, trans_b, m, n, k, alpha, a, b, ab, beta, c, ct, nullptr);
    add_bias(c, bias, ct, m, n);
    return;
  }
  if (k == 0) {
    // Nothing to multiply: c = beta * c (+ bias).
    if (ct != DType::f32 && beta != 0.0f)
      throw std::invalid_argument("cuda gemm: k = 0 with beta != 0 needs an f32 output");
    if (beta == 0.0f)
      TERN_CUDA_CHECK(cudaMemsetAsync(c, 0, m * n * dtype_size(ct), compute_stream()));
    else
      scale(static_cast<float*>(c), beta, m * n);
    if (bias) add_bias(c, bias, ct, m, n);
    return;
  }
  static std::mutex mu;
  static std::map<Key, Plan> plans;
  const uint32_t align_ab = std::min(alignment_of(a), alignment_of(b));
  const uint32_t align_c = alignment_of(c), align_bias = bias ? alignment_of(bias) : 256;
  const Key key{trans_a,
                trans_b,
                m,
                n,
                k,
                static_cast<int>(ab),
                static_cast<int>(ct),
                bias != nullptr,
                tf32(),
                align_ab,
                align_c,
                align_bias};
  Plan plan;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = plans.find(key);
    if (it == plans.end())
      it = plans
               .emplace(key, make_plan(trans_a, trans_b, m, n, k, ab, ct, bias != nullptr, tf32(),
                                       align_ab, align_c))
               .first;
    plan = it->second;
    if (bias)
      TERN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                       &bias, sizeof bias));
    size_t ws_bytes = 0;
    void* ws = blaslt_workspace(&ws_bytes);
    TERN_CUBLAS_CHECK(cublasLtMatmul(blaslt(), plan.desc, &alpha, b, plan.la, a, plan.lb, &beta, c,
                                     plan.lc, c, plan.lc, &plan.algo, ws, ws_bytes,
                                     compute_stream()));
  }
}

}  // namespace tern::cuda
