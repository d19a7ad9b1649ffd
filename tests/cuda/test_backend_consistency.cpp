// Over 600 lines on purpose: one case per op of the op list, which test_op_coverage.cpp reads as
// a whole.
// The CUDA backend against the CPU reference, op by op over the whole op list
// (include/tern/compute/ops.h): each case draws fresh random inputs, runs the CPU op on host
// tensors and the CUDA op on copies on cuda:0, and compares the results by relative L2 error (<
// 1e-5 in f32 with TF32 off; < 1e-2 in bf16, against the CPU op on the bf16-rounded inputs, so only
// the GPU's own rounding counts) and element by element (Bound, below).
// tests/unit/test_op_coverage.cpp fails when an op of the op list has no case here. GPU outputs
// start as NaN (accumulated outputs as the same random values on both sides), so an element the GPU
// never writes shows up. Shapes include sizes that are not multiples of the vector width or the
// block size. Then NCCL at world size 1.
//
// Without a GPU every test skips; nothing here touches CUDA before a test's SetUp (gtest discovery
// runs this binary at build time on machines without one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tern/compute/device.h"
#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"
#include "tern/dist/grad_reducer.h"

namespace tern {
namespace {

constexpr Device kCpu{};
constexpr Device kGpu{DeviceKind::cuda, 0};
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr DType kFloatTypes[] = {DType::f32, DType::bf16};
constexpr ops::Activation kActivations[] = {ops::Activation::relu, ops::Activation::gelu,
                                            ops::Activation::tanh};

// ---- host <-> device ----------------------------------------------------------------------------

Tensor filled(const Shape& s, float v) {
  Tensor t = Tensor::empty(s);
  std::fill_n(t.data<float>(), t.numel(), v);
  return t;
}

// Converted on the CPU (the same tensor when it already has that dtype).
Tensor converted(const Tensor& host, DType dt) {
  if (host.dtype() == dt) return host;
  Tensor out = Tensor::empty(host.shape(), dt);
  ops::convert(host, out);
  return out;
}
Tensor round_bf16(const Tensor& x) { return converted(converted(x, DType::bf16), DType::f32); }

// A GPU copy in `dt`, `offset` elements into a larger allocation (offset 1: not 16-byte aligned).
Tensor to_gpu(const Tensor& host, DType dt, int64_t offset = 0) {
  const Tensor src = converted(host, dt);
  if (offset == 0) return src.to(kGpu);
  Tensor view = Tensor::empty({src.numel() + offset}, dt, kGpu).slice(offset, src.shape());
  view.copy_from(src);
  return view;
}
Tensor to_cpu_f32(const Tensor& t) { return converted(t.to(kCpu), DType::f32); }
Tensor host_copy(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  out.copy_from(t);
  return out;
}

// ---- comparisons --------------------------------------------------------------------------------

// How close the GPU must come to the CPU. A relative L2 error over the whole tensor lets a handful
// of wrong elements in a large output through, so each element is bounded too:
//   ||gpu - cpu|| / ||cpu||                  < l2        (the plain norm where cpu is all zeros)
//   max |gpu - cpu| / max |cpu|              < max_rel   (absolute where cpu is all zeros)
//   |gpu_i - cpu_i| <= rtol |cpu_i| + atol rms(cpu)  for every i  (atol absolute where rms is 0)
// atol scales with the tensor's RMS: sums that cancel leave elements near zero whose rounding
// error is that of their terms, not of their value.
struct Bound {
  double l2, max_rel, rtol, atol;
};
// f32 with TF32 off: both sides round in f32, in different orders.
constexpr Bound kF32Bound{1e-5, 1e-4, 1e-4, 1e-4};
// bf16: the GPU rounds its outputs (and, in some kernels, intermediates) to 8 bits of mantissa;
// 1/32 is 4 of its units in the last place.
constexpr Bound kBf16Bound{1e-2, 2e-2, 1.0 / 32, 5e-2};

// Checks that the GPU wrote every element (no NaN, the poison, is left), then the bounds above.
void compare(const std::string& what, const Tensor& cpu, const Tensor& gpu, const Bound& b) {
  ASSERT_EQ(cpu.numel(), gpu.numel()) << what;
  const Tensor g = to_cpu_f32(gpu);
  const float* c = cpu.data<float>();
  const float* x = g.data<float>();
  const int64_t n = cpu.numel();
  double diff = 0, norm = 0, max_diff = 0, max_ref = 0;
  int64_t nans = 0, first_nan = -1;
  for (int64_t i = 0; i < n; ++i) {
    max_ref = std::max(max_ref, std::abs(static_cast<double>(c[i])));
    if (std::isnan(x[i])) {
      if (nans++ == 0) first_nan = i;
      continue;
    }
    const double d = static_cast<double>(x[i]) - c[i];
    diff += d * d;
    norm += static_cast<double>(c[i]) * c[i];
    max_diff = std::max(max_diff, std::abs(d));
  }
  const std::string where = what + " " + shape_str(cpu.shape());
  EXPECT_EQ(nans, 0) << where << ": " << nans << " NaN outputs (never written?), the first at "
                     << first_nan;
  const double err = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  EXPECT_LT(err, b.l2) << where << ": relative L2 error " << err;
  const double max_err = max_ref > 0 ? max_diff / max_ref : max_diff;
  EXPECT_LT(max_err, b.max_rel) << where << ": max |gpu - cpu| / max |cpu| = " << max_err;
  const double rms = n > 0 ? std::sqrt(norm / static_cast<double>(n)) : 0;
  const double atol = rms > 0 ? b.atol * rms : b.atol;
  int64_t outside = 0;
  std::string first;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) continue;
    const double d = std::abs(static_cast<double>(x[i]) - c[i]);
    if (d <= b.rtol * std::abs(c[i]) + atol) continue;
    if (outside++ < 3)
      first += " [" + std::to_string(i) + "] gpu " + std::to_string(x[i]) + " cpu " +
               std::to_string(c[i]) + ";";
  }
  EXPECT_EQ(outside, 0) << where << ": " << outside << " of " << n
                        << " elements outside |gpu - cpu| <= " << b.rtol << " |cpu| + " << atol
                        << " (" << b.atol << " x rms " << rms << "):" << first;
}
void compare(const std::string& what, const Tensor& cpu, const Tensor& gpu, DType dt) {
  compare(what, cpu, gpu, dt == DType::bf16 ? kBf16Bound : kF32Bound);
}

void compare_stats(const std::string& what, ops::LossStats cpu, ops::LossStats gpu, double tol) {
  const double d = std::abs(gpu.loss_sum - cpu.loss_sum);
  EXPECT_LT(cpu.loss_sum != 0 ? d / std::abs(cpu.loss_sum) : d, tol)
      << what << ": loss_sum " << gpu.loss_sum << " on the GPU, " << cpu.loss_sum << " on the CPU";
  EXPECT_EQ(gpu.correct, cpu.correct) << what << ": correct";
}

// Elements of the GPU tensor outside `keep_out` must be bitwise what the host tensor `before` held.
void expect_untouched(const std::string& what, const Tensor& before, const Tensor& gpu,
                      const std::vector<ops::ParamSegment>& keep_out = {}) {
  const Tensor after = gpu.to(kCpu);
  std::vector<char> inside(before.numel(), 0);
  for (const auto& s : keep_out) std::fill_n(inside.begin() + s.offset, s.count, 1);
  const size_t es = dtype_size(before.dtype());
  const auto* a = static_cast<const char*>(before.raw());
  const auto* b = static_cast<const char*>(after.raw());
  int64_t changed = 0, first = -1;
  for (int64_t i = 0; i < before.numel(); ++i)
    if (!inside[i] && std::memcmp(a + i * es, b + i * es, es) != 0 && changed++ == 0) first = i;
  EXPECT_EQ(changed, 0) << what << ": elements that must stay untouched changed, the first at "
                        << first;
}

// One case: an op on one shape and dtype, with a random stream of its own.
struct Case {
  std::string name;
  DType dt;
  int64_t offset = 0;  // where the GPU tensors start in their allocations (elements)
  std::mt19937_64 rng;

  Case(const std::string& op, DType dtype, int64_t gpu_offset = 0) : dt(dtype), offset(gpu_offset) {
    static uint64_t cases = 0;
    const uint64_t seed = 0x9E3779B97F4A7C15ull * ++cases;
    rng.seed(seed);
    name = op + " " + dtype_name(dt) + (offset ? " offset " + std::to_string(offset) : "") +
           " (seed " + std::to_string(seed) + ")";
  }
  // The tolerance of scalar results (loss sums) in this dtype.
  double tol() const { return dt == DType::bf16 ? kBf16Bound.l2 : kF32Bound.l2; }
  // A host f32 tensor, uniform in [lo, hi), rounded to bf16 when `as` (by default the case's
  // dtype) is bf16 so that the CPU sees
  // exactly what the GPU gets.
  Tensor input(const Shape& s, float lo = -1, float hi = 1, std::optional<DType> as = {}) {
    Tensor t = Tensor::empty(s);
    std::uniform_real_distribution<float> u(lo, hi);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
    return as.value_or(dt) == DType::bf16 ? round_bf16(t) : t;
  }
  Tensor f32_input(const Shape& s, float lo = -1, float hi = 1) {
    return input(s, lo, hi, DType::f32);
  }
  Tensor gpu(const Tensor& host, std::optional<DType> as = {}) const {
    return to_gpu(host, as.value_or(dt), offset);
  }
  Tensor poison(const Shape& s, std::optional<DType> as = {}) const {
    return gpu(filled(s, kNaN), as);
  }
  void check(const std::string& what, const Tensor& cpu, const Tensor& gpu) const {
    compare(name + ": " + what, cpu, gpu, dt);
  }
};

// Rows and columns that are not multiples of the vector width, the warp or the block.
std::vector<Shape> row_shapes() {
  std::vector<Shape> s;
  for (int64_t r : {1, 3, 33, 257})
    for (int64_t c : {1, 5, 10, 31, 64, 1000, 4099}) s.push_back({r, c});
  s.push_back({0, 5});     // an empty batch
  s.push_back({8193, 5});  // tall: many row chunks in the column sums
  return s;
}
const int64_t kFlatSizes[] = {0, 1, 3, 5, 31, 1000, 4099, 262147};

class CudaBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible: CUDA backend not exercised";
    use_cuda_device(0);
    set_cuda_tf32(false);
  }
};

// ---- GEMM ---------------------------------------------------------------------------------------

// Every shape, transpose, bias and dtype combination; `misaligned` names the operand placed one
// element into its allocation (a 4-byte aligned f32 or 2-byte aligned bf16 view): "a", "b", "c",
// "abc" (all three) or "bias". One test per placement, so that a fault stays in its own test.
void gemm_cases(const std::string& misaligned) {
  struct Variant {
    DType ab, ct;
    float alpha, beta;
  };
  const Variant variants[] = {{DType::f32, DType::f32, 1.0f, 0.0f},
                              {DType::f32, DType::f32, 0.5f, 1.0f},
                              {DType::bf16, DType::bf16, 1.0f, 0.0f},
                              {DType::bf16, DType::f32, 1.0f, 0.0f},
                              {DType::bf16, DType::f32, 0.5f, 1.0f}};
  const int64_t mnk[][3] = {{1, 1, 1},      {7, 5, 9},     {64, 64, 64},  {129, 7, 257},
                            {257, 129, 64}, {1, 257, 129}, {33, 1000, 7}, {5, 3, 0}};
  for (const auto& [m, n, k] : mnk)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool with_bias : {false, true})
          for (const Variant& v : variants) {
            Case cs("gemm m=" + std::to_string(m) + " n=" + std::to_string(n) +
                        " k=" + std::to_string(k) + (ta ? " a^T" : "") + (tb ? " b^T" : "") +
                        (with_bias ? " +bias" : "") + " c " + dtype_name(v.ct) +
                        (v.beta != 0 ? " alpha 0.5 beta 1" : "") +
                        (misaligned != "none" ? " misaligned " + misaligned : ""),
                    v.ab);
            auto place = [&](const Tensor& host, DType dt, const std::string& name) {
              const bool off = name == misaligned || (misaligned == "abc" && name.size() == 1);
              return to_gpu(host, dt, off ? 1 : 0);
            };
            Tensor a = cs.input(ta ? Shape{k, m} : Shape{m, k});
            Tensor b = cs.input(tb ? Shape{n, k} : Shape{k, n});
            Tensor bias = cs.input({n}, -1, 1, v.ct);
            // beta = 1 accumulates: the same random c on both sides; else c starts as poison.
            Tensor c = v.beta != 0 ? cs.input({m, n}, -1, 1, v.ct) : Tensor::zeros({m, n});
            Tensor cg = place(v.beta != 0 ? c : filled({m, n}, kNaN), v.ct, "c");
            Tensor ag = place(a, v.ab, "a"), bg = place(b, v.ab, "b"),
                   biasg = place(bias, v.ct, "bias");
            ops::gemm(a, ta, b, tb, c, v.alpha, v.beta, with_bias ? &bias : nullptr);
            try {
              ops::gemm(ag, ta, bg, tb, cg, v.alpha, v.beta, with_bias ? &biasg : nullptr);
              device_synchronize(kGpu);  // a fault in the GEMM's kernel surfaces here
            } catch (const std::exception& e) {
              ADD_FAILURE() << cs.name << ": " << e.what();
              continue;
            }
            cs.check("c", c, cg);
          }
}

TEST_F(CudaBackend, Gemm) { gemm_cases("none"); }
TEST_F(CudaBackend, GemmMisalignedA) { gemm_cases("a"); }
TEST_F(CudaBackend, GemmMisalignedB) { gemm_cases("b"); }
TEST_F(CudaBackend, GemmMisalignedC) { gemm_cases("c"); }
TEST_F(CudaBackend, GemmMisalignedABC) { gemm_cases("abc"); }

// ---- bias, activations, dropout -----------------------------------------------------------------

TEST_F(CudaBackend, AddBiasAndBiasGrad) {
  for (const Shape& s : row_shapes())
    for (DType dt : kFloatTypes) {
      Case cs("add_bias", dt);
      Tensor y = cs.input(s), bias = cs.input({s[1]});
      Tensor yg = cs.gpu(y);  // accumulated into: the same values on both sides
      ops::add_bias(y, bias);
      ops::add_bias(yg, cs.gpu(bias));
      cs.check("y", y, yg);
      for (bool accumulate : {false, true}) {
        Case cg(accumulate ? "bias_grad accumulate" : "bias_grad", dt);
        Tensor dy = cg.input(s, -1, 1);
        Tensor db = accumulate ? cg.f32_input({s[1]}) : Tensor::zeros({s[1]});
        Tensor dbg = accumulate ? cg.gpu(db, DType::f32) : cg.poison({s[1]}, DType::f32);
        ops::bias_grad(dy, db, accumulate);
        ops::bias_grad(cg.gpu(dy), dbg, accumulate);
        cg.check("dbias", db, dbg);
      }
    }
}

TEST_F(CudaBackend, Activations) {
  for (int64_t n : kFlatSizes)
    for (int64_t offset : {0, 1})
      for (DType dt : kFloatTypes)
        for (ops::Activation act : kActivations) {
          Case cs(std::string(ops::activation_name(act)) + " n=" + std::to_string(n), dt, offset);
          Tensor x = cs.input({n}, -3, 3), dy = cs.input({n});
          Tensor y = Tensor::empty({n}), dx = Tensor::empty({n});
          Tensor xg = cs.gpu(x), yg = cs.poison({n}), dxg = cs.poison({n});
          ops::activation_forward(act, x, y);
          ops::activation_forward(act, xg, yg);
          cs.check("forward y", y, yg);
          ops::activation_backward(act, x, dy, dx);
          ops::activation_backward(act, xg, cs.gpu(dy), dxg);
          cs.check("backward dx", dx, dxg);
        }
}

TEST_F(CudaBackend, DropoutSamePhiloxMaskAsCpu) {
  std::vector<Shape> shapes = row_shapes();
  shapes.push_back({3, 5, 7});  // rows are the first dimension, the rest one row
  for (const Shape& s : shapes)
    for (DType dt : kFloatTypes)
      for (float p : {0.0f, 0.1f, 0.5f})
        for (bool backward : {false, true}) {
          Case cs(std::string(backward ? "dropout_backward" : "dropout_forward") +
                      " p=" + std::to_string(p),
                  dt);
          // A seed using both halves, and samples crossing 2^32 (the counter's two words).
          const ops::DropoutKey key{0x0123456789ABCDEFull ^ cs.rng(), backward ? 7u : 3u,
                                    (int64_t{1} << 32) - 2};
          Tensor x = cs.input(s), y = Tensor::empty(s);
          Tensor yg = cs.poison(s);
          (backward ? ops::dropout_backward : ops::dropout_forward)(x, y, p, key);
          (backward ? ops::dropout_backward : ops::dropout_forward)(cs.gpu(x), yg, p, key);
          cs.check("y", y, yg);
          // The mask is the CPU's exactly: in f32 every element is bitwise the CPU's, in bf16 the
          // same elements are dropped.
          const Tensor got = to_cpu_f32(yg);
          int64_t differ = 0;
          for (int64_t i = 0; i < y.numel(); ++i) {
            const float c = y.data<float>()[i], g = got.data<float>()[i];
            differ += dt == DType::f32 ? std::memcmp(&c, &g, 4) != 0 : (c == 0) != (g == 0);
          }
          EXPECT_EQ(differ, 0) << cs.name << " " << shape_str(s) << ": mask differs from the CPU's";
        }
}

// ---- layer norm ---------------------------------------------------------------------------------

TEST_F(CudaBackend, LayerNormForwardBackward) {
  const float eps = 1e-5f;
  for (const Shape& s : row_shapes())
    for (DType dt : kFloatTypes) {
      const int64_t rows = s[0], cols = s[1];
      Case cs("layernorm_forward", dt);
      // Rows with a clear spread (rstd well conditioned); gamma and beta are f32 parameters.
      Tensor x = cs.input(s, -2, 3), gamma = cs.f32_input({cols}, 0.5f, 1.5f),
             beta = cs.f32_input({cols}, -0.5f, 0.5f);
      Tensor y = Tensor::empty(s), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
      Tensor xg = cs.gpu(x), gammag = cs.gpu(gamma, DType::f32), yg = cs.poison(s),
             meang = cs.poison({rows}, DType::f32), rstdg = cs.poison({rows}, DType::f32);
      ops::layernorm_forward(x, gamma, beta, y, mean, rstd, eps);
      ops::layernorm_forward(xg, gammag, cs.gpu(beta, DType::f32), yg, meang, rstdg, eps);
      cs.check("y", y, yg);
      cs.check("mean", mean, meang);
      cs.check("rstd", rstd, rstdg);
      for (bool accumulate : {false, true}) {
        Case cb(accumulate ? "layernorm_backward accumulate" : "layernorm_backward", dt);
        Tensor dy = cb.input(s), dx = Tensor::empty(s);
        Tensor dgamma = accumulate ? cb.f32_input({cols}) : Tensor::zeros({cols});
        Tensor dbeta = accumulate ? cb.f32_input({cols}) : Tensor::zeros({cols});
        Tensor dxg = cb.poison(s);
        Tensor dgammag = accumulate ? cb.gpu(dgamma, DType::f32) : cb.poison({cols}, DType::f32);
        Tensor dbetag = accumulate ? cb.gpu(dbeta, DType::f32) : cb.poison({cols}, DType::f32);
        // The CPU's saved statistics on both sides: backward is compared on its own.
        ops::layernorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate);
        ops::layernorm_backward(cb.gpu(dy), xg, gammag, cb.gpu(mean, DType::f32),
                                cb.gpu(rstd, DType::f32), dxg, dgammag, dbetag, accumulate);
        // One column has no variance: rstd = 1/sqrt(eps) magnifies rounding, and dx, exactly 0 on
        // the CPU, is the GPU's contracted (FMA) rounding residue there: an absolute bound.
        if (cols == 1)
          compare(cb.name + ": dx", dx, dxg, Bound{1e-2, 1e-2, 0, 1e-2});
        else
          cb.check("dx", dx, dxg);
        cb.check("dgamma", dgamma, dgammag);
        cb.check("dbeta", dbeta, dbetag);
      }
    }
}

// ---- losses -------------------------------------------------------------------------------------

TEST_F(CudaBackend, SoftmaxCrossEntropy) {
  for (const Shape& s : row_shapes())
    for (DType dt : kFloatTypes) {
      const int64_t rows = s[0], classes = s[1];
      Case cs("softmax_cross_entropy", dt);
      Tensor logits = cs.input(s, -4, 4);
      // Every other row labelled with its arg-max (the first, on ties), so `correct` counts.
      Tensor labels = Tensor::empty({rows}, DType::i32);
      std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(classes - 1));
      for (int64_t r = 0; r < rows; ++r) {
        const float* z = logits.data<float>() + r * classes;
        labels.data<int32_t>()[r] =
            r % 2 ? pick(cs.rng) : static_cast<int32_t>(std::max_element(z, z + classes) - z);
      }
      const float grad_scale = 1.0f / static_cast<float>(std::max<int64_t>(rows, 1));
      Tensor dlogits = Tensor::empty(s), logitsg = cs.gpu(logits), dlogitsg = cs.poison(s);
      Tensor labelsg = cs.gpu(labels, DType::i32);
      compare_stats(cs.name + " " + shape_str(s),
                    ops::softmax_cross_entropy(logits, labels, &dlogits, grad_scale),
                    ops::softmax_cross_entropy(logitsg, labelsg, &dlogitsg, grad_scale), cs.tol());
      cs.check("dlogits", dlogits, dlogitsg);
      compare_stats(cs.name + " without dlogits " + shape_str(s),
                    ops::softmax_cross_entropy(logits, labels, nullptr, grad_scale),
                    ops::softmax_cross_entropy(logitsg, labelsg, nullptr, grad_scale), cs.tol());
    }
}

TEST_F(CudaBackend, SoftmaxCrossEntropyRejectsBadLabelsOnGpu) {
  for (DType dt : kFloatTypes)
    for (int64_t rows : {1, 257})
      for (int32_t bad : {-1, 10}) {
        Case cs("softmax_cross_entropy bad label " + std::to_string(bad), dt);
        Tensor logits = cs.gpu(cs.input({rows, 10})), dlogits = cs.poison({rows, 10});
        Tensor labels = Tensor::zeros({rows}, DType::i32);
        labels.data<int32_t>()[rows - 1] = bad;
        const Tensor labelsg = labels.to(kGpu);
        EXPECT_THROW(ops::softmax_cross_entropy(logits, labelsg, nullptr, 1.0f), std::out_of_range)
            << cs.name;
        EXPECT_THROW(ops::softmax_cross_entropy(logits, labelsg, &dlogits, 1.0f), std::out_of_range)
            << cs.name;
        // The device is still fine afterwards.
        labels.data<int32_t>()[rows - 1] = 9;
        EXPECT_NO_THROW(ops::softmax_cross_entropy(logits, labels.to(kGpu), &dlogits, 1.0f));
      }
}

TEST_F(CudaBackend, MeanSquaredError) {
  for (const Shape& s : row_shapes())
    for (DType dt : kFloatTypes) {
      Case cs("mean_squared_error", dt);
      Tensor pred = cs.input(s), target = cs.f32_input(s), dpred = Tensor::empty(s);
      Tensor predg = cs.gpu(pred), targetg = cs.gpu(target, DType::f32), dpredg = cs.poison(s);
      compare_stats(cs.name + " " + shape_str(s),
                    ops::mean_squared_error(pred, target, &dpred, 0.5f),
                    ops::mean_squared_error(predg, targetg, &dpredg, 0.5f), cs.tol());
      cs.check("dpred", dpred, dpredg);
      compare_stats(cs.name + " without dpred " + shape_str(s),
                    ops::mean_squared_error(pred, target, nullptr, 0.5f),
                    ops::mean_squared_error(predg, targetg, nullptr, 0.5f), cs.tol());
    }
}

// ---- reductions, scale, convert -----------------------------------------------------------------

TEST_F(CudaBackend, SumSquaresAndScale) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{4099}, int64_t{(1 << 20) + 3}})
    for (int64_t offset : {0, 1}) {
      Case cs("sum_squares/scale n=" + std::to_string(n), DType::f32, offset);
      Tensor x = cs.input({n}, -2, 2), xg = cs.gpu(x);
      const double ref = ops::sum_squares(x), got = ops::sum_squares(xg);
      EXPECT_LE(std::abs(got - ref), 1e-5 * ref) << cs.name << ": " << got << " vs " << ref;
      ops::scale(x, -0.37f);
      ops::scale(xg, -0.37f);
      cs.check("scaled x", x, xg);
    }
}

TEST_F(CudaBackend, ConvertIsBitwiseTheCpus) {
  // Every bf16 bit pattern to f32, and f32 bit patterns (random ones, plus the rounding edge cases:
  // ties, denormals, overflow to inf, NaN) to bf16.
  Tensor all_bf16 = Tensor::empty({65536 + 3}, DType::bf16);
  for (uint32_t i = 0; i < 65536 + 3; ++i) static_cast<uint16_t*>(all_bf16.raw())[i] = i & 0xffff;
  Tensor f32 = Tensor::empty({100003});
  std::mt19937_64 rng(12345);
  const uint32_t edge[] = {0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x3f808000, 0x3f818000,
                           0x3f808001, 0x7f7fffff, 0xff7f8000, 0x7f800000, 0xff800000, 0x7fc00000,
                           0x7f800001, 0xffffffff, 0x3f7fffff, 0x0000ffff, 0x00008000};
  auto* bits = static_cast<uint32_t*>(f32.raw());
  for (int64_t i = 0; i < f32.numel(); ++i)
    bits[i] = i < int64_t(std::size(edge)) ? edge[i] : static_cast<uint32_t>(rng());
  for (const Tensor& src : {all_bf16, f32})
    for (DType to : {DType::f32, DType::bf16})
      for (int64_t offset : {0, 1}) {
        const std::string what = std::string("convert ") + dtype_name(src.dtype()) + " to " +
                                 dtype_name(to) + " offset " + std::to_string(offset);
        Tensor want = Tensor::empty(src.shape(), to);
        ops::convert(src, want);
        Tensor dst = to_gpu(filled(src.shape(), kNaN), to, offset);
        ops::convert(to_gpu(src, src.dtype(), offset), dst);
        const Tensor got = dst.to(kCpu);
        // Bitwise, but NaN only has to stay NaN (its payload may differ).
        auto same = [&](int64_t i) {
          if (to == DType::f32) {
            const float w = want.data<float>()[i], g = got.data<float>()[i];
            return std::memcmp(&w, &g, 4) == 0 || (std::isnan(w) && std::isnan(g));
          }
          const uint16_t w = static_cast<const uint16_t*>(want.raw())[i],
                         g = static_cast<const uint16_t*>(got.raw())[i];
          auto nan = [](uint16_t h) { return (h & 0x7fff) > 0x7f80; };
          return w == g || (nan(w) && nan(g));
        };
        int64_t differ = 0, first = -1;
        for (int64_t i = 0; i < src.numel(); ++i)
          if (!same(i) && differ++ == 0) first = i;
        EXPECT_EQ(differ, 0) << what << ": elements differ from the CPU's, the first at " << first;
      }
}

// ---- optimizers ---------------------------------------------------------------------------------

// Weight-decay masks with unaligned offsets and counts, gaps, an empty segment and a segment over
// several blocks' chunks; the second list alternates with the first (the GPU caches its table).
const std::vector<std::vector<ops::ParamSegment>> kSegmentLists = {
    {{0, 37, true},
     {37, 1000, false},
     {1040, 8197, true},
     {9239, 0, true},
     {9300, 3, false},
     {9304, 8292, true}},
    {{3, 5001, true}, {6000, 7, false}}};
constexpr int64_t kParams = 20000;

TEST_F(CudaBackend, AdamWUpdate) {
  for (const auto& segs : kSegmentLists)
    for (bool with_shadow : {false, true})
      for (int64_t offset : {0, 1}) {  // 1: no float4 access
        Case cs(std::string("adamw_update") + (with_shadow ? " shadow" : ""), DType::f32, offset);
        const Shape s{kParams};
        Tensor p = cs.input(s), g = cs.input(s), m = cs.input(s, -0.1f, 0.1f),
               v = cs.input(s, 0.01f, 0.5f);
        // The shadow: poison inside the segments (written), random values outside (kept).
        Tensor shadow0 = cs.input(s);
        for (const auto& seg : segs)
          std::fill_n(shadow0.data<float>() + seg.offset, seg.count, kNaN);
        const Tensor p0 = host_copy(p), m0 = host_copy(m), v0 = host_copy(v), g0 = host_copy(g),
                     shadow0_bf16 = converted(shadow0, DType::bf16);
        Tensor pg = cs.gpu(p), gg = cs.gpu(g), mg = cs.gpu(m), vg = cs.gpu(v);
        Tensor shadowg = cs.gpu(shadow0, DType::bf16), shadow = Tensor::empty(s, DType::bf16);
        for (int64_t step : {1, 2, 10}) {
          const ops::AdamWHyper h{0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, step};
          ops::adamw_update(p, g, m, v, segs, h, with_shadow ? &shadow : nullptr);
          ops::adamw_update(pg, gg, mg, vg, segs, h, with_shadow ? &shadowg : nullptr);
          const std::string at = " after step " + std::to_string(step);
          cs.check("param" + at, p, pg);
          cs.check("m" + at, m, mg);
          cs.check("v" + at, v, vg);
          expect_untouched(cs.name + " param" + at, p0, pg, segs);
          expect_untouched(cs.name + " m" + at, m0, mg, segs);
          expect_untouched(cs.name + " v" + at, v0, vg, segs);
          expect_untouched(cs.name + " grad" + at, g0, gg);
          if (with_shadow) {
            // Inside the segments bf16(param); outside what was there.
            Tensor want = to_cpu_f32(shadow0_bf16);
            const Tensor from_p = to_cpu_f32(shadow);
            for (const auto& seg : segs)
              std::copy_n(from_p.data<float>() + seg.offset, seg.count,
                          want.data<float>() + seg.offset);
            compare(cs.name + " shadow" + at, want, shadowg, DType::bf16);
            expect_untouched(cs.name + " shadow" + at, shadow0_bf16, shadowg, segs);
          } else {
            expect_untouched(cs.name + " (no shadow) shadow buffer" + at, shadow0_bf16, shadowg);
          }
        }
      }
}

TEST_F(CudaBackend, SgdUpdate) {
  const ops::SgdHyper hypers[] = {
      {0.1f, 0.9f, 0.01f, false}, {0.1f, 0.9f, 0.01f, true}, {0.1f, 0.0f, 0.01f, false}};
  for (const auto& segs : kSegmentLists)
    for (const ops::SgdHyper& h : hypers)
      for (bool with_shadow : {false, true}) {
        Case cs(std::string("sgd_update momentum ") + std::to_string(h.momentum) +
                    (h.nesterov ? " nesterov" : "") + (with_shadow ? " shadow" : ""),
                DType::f32);
        const Shape s{kParams};
        Tensor p = cs.input(s), g = cs.input(s), vel = cs.input(s, -0.1f, 0.1f);
        const Tensor p0 = host_copy(p), g0 = host_copy(g), vel0 = host_copy(vel);
        Tensor pg = cs.gpu(p), gg = cs.gpu(g), velg = cs.gpu(vel);
        Tensor shadow = Tensor::empty(s, DType::bf16), shadowg = cs.poison(s, DType::bf16);
        for (int step = 1; step <= 3; ++step) {
          ops::sgd_update(p, g, vel, segs, h, with_shadow ? &shadow : nullptr);
          ops::sgd_update(pg, gg, velg, segs, h, with_shadow ? &shadowg : nullptr);
          const std::string at = " after step " + std::to_string(step);
          cs.check("param" + at, p, pg);
          cs.check("velocity" + at, vel, velg);
          expect_untouched(cs.name + " param" + at, p0, pg, segs);
          expect_untouched(cs.name + " grad" + at, g0, gg);
          // Momentum 0 keeps no velocity: the buffer stays as it was everywhere.
          expect_untouched(cs.name + " velocity" + at, vel0, velg,
                           h.momentum == 0 ? std::vector<ops::ParamSegment>{} : segs);
          // The shadow: bf16(param) inside the segments, still the poison outside.
          expect_untouched(cs.name + " shadow" + at, converted(filled(s, kNaN), DType::bf16),
                           shadowg, with_shadow ? segs : std::vector<ops::ParamSegment>{});
          if (with_shadow)
            for (const auto& seg : segs) {
              const Tensor want = to_cpu_f32(shadow).slice(seg.offset, {seg.count});
              compare(cs.name + " shadow" + at, want, shadowg.slice(seg.offset, {seg.count}),
                      DType::bf16);
            }
        }
      }
}

// ---- convolution, pooling, batch norm -----------------------------------------------------------

struct ConvCase {
  int64_t n, c, h, w, k, kernel, stride, pad;
};
const ConvCase kConvCases[] = {{2, 3, 9, 7, 4, 3, 1, 1},  {5, 1, 8, 8, 8, 3, 2, 0},
                               {1, 16, 5, 5, 3, 5, 1, 2}, {3, 6, 11, 13, 5, 2, 3, 1},
                               {1, 1, 1, 1, 1, 1, 1, 0},  {0, 3, 8, 8, 4, 3, 1, 1}};

TEST_F(CudaBackend, Conv2dForwardBackward) {
  for (const ConvCase& p : kConvCases)
    for (DType dt : kFloatTypes)
      for (bool with_bias : {false, true})
        for (bool accumulate : {false, true}) {
          Case cs("conv2d n=" + std::to_string(p.n) + " c=" + std::to_string(p.c) + " " +
                      std::to_string(p.h) + "x" + std::to_string(p.w) +
                      " k=" + std::to_string(p.k) + " " + std::to_string(p.kernel) + "x" +
                      std::to_string(p.kernel) + " stride " + std::to_string(p.stride) + " pad " +
                      std::to_string(p.pad) + (with_bias ? " +bias" : "") +
                      (accumulate ? " accumulate" : ""),
                  dt);
          const ops::Conv2dGeometry g{p.stride, p.pad};
          const int64_t oh = (p.h + 2 * p.pad - p.kernel) / p.stride + 1;
          const int64_t ow = (p.w + 2 * p.pad - p.kernel) / p.stride + 1;
          const Shape xs{p.n, p.c, p.h, p.w}, ws{p.k, p.c, p.kernel, p.kernel},
              ys{p.n, p.k, oh, ow};
          Tensor x = cs.input(xs), w = cs.input(ws), bias = cs.input({p.k});
          Tensor y = Tensor::empty(ys), yg = cs.poison(ys);
          Tensor xg = cs.gpu(x), wg = cs.gpu(w), biasg = cs.gpu(bias);
          ops::conv2d_forward(x, w, with_bias ? &bias : nullptr, y, g);
          try {
            ops::conv2d_forward(xg, wg, with_bias ? &biasg : nullptr, yg, g);
            device_synchronize(kGpu);
          } catch (const std::exception& e) {
            ADD_FAILURE() << cs.name << ": " << e.what();
            continue;
          }
          cs.check("y", y, yg);
          Tensor dy = cs.input(ys), dx = Tensor::empty(xs), dxg = cs.poison(xs);
          Tensor dw = accumulate ? cs.f32_input(ws) : Tensor::zeros(ws);
          Tensor db = accumulate ? cs.f32_input({p.k}) : Tensor::zeros({p.k});
          Tensor dwg = accumulate ? cs.gpu(dw, DType::f32) : cs.poison(ws, DType::f32);
          Tensor dbg = accumulate ? cs.gpu(db, DType::f32) : cs.poison({p.k}, DType::f32);
          ops::conv2d_backward(x, w, dy, &dx, dw, with_bias ? &db : nullptr, g, accumulate);
          ops::conv2d_backward(xg, wg, cs.gpu(dy), &dxg, dwg, with_bias ? &dbg : nullptr, g,
                               accumulate);
          if (p.n > 0) cs.check("dx", dx, dxg);
          cs.check("dw", dw, dwg);
          if (with_bias) cs.check("dbias", db, dbg);
        }
}

TEST_F(CudaBackend, Pool2dForwardBackward) {
  struct P {
    int64_t n, c, h, w, k, stride;
  };
  const P cases[] = {{2, 3, 8, 8, 2, 2}, {3, 5, 9, 7, 3, 2}, {1, 2, 13, 11, 3, 1},
                     {4, 1, 5, 6, 5, 5}, {1, 1, 1, 1, 1, 1}, {2, 33, 28, 28, 2, 2}};
  for (const P& p : cases)
    for (ops::Pool pool : {ops::Pool::max, ops::Pool::avg})
      for (DType dt : kFloatTypes) {
        Case cs(std::string(pool == ops::Pool::max ? "maxpool" : "avgpool") + " " +
                    std::to_string(p.h) + "x" + std::to_string(p.w) + " k=" + std::to_string(p.k) +
                    " stride " + std::to_string(p.stride),
                dt);
        const int64_t oh = (p.h - p.k) / p.stride + 1, ow = (p.w - p.k) / p.stride + 1;
        const Shape xs{p.n, p.c, p.h, p.w}, ys{p.n, p.c, oh, ow};
        Tensor x = cs.input(xs), y = Tensor::empty(ys), yg = cs.poison(ys), xg = cs.gpu(x);
        ops::pool2d_forward(pool, x, y, p.k, p.stride);
        ops::pool2d_forward(pool, xg, yg, p.k, p.stride);
        cs.check("y", y, yg);
        Tensor dy = cs.input(ys), dx = Tensor::empty(xs), dxg = cs.poison(xs);
        ops::pool2d_backward(pool, x, dy, dx, p.k, p.stride);
        ops::pool2d_backward(pool, xg, cs.gpu(dy), dxg, p.k, p.stride);
        cs.check("dx", dx, dxg);
      }
}

void compare_sums(const std::string& what, const std::vector<double>& cpu,
                  const std::vector<double>& gpu, double tol) {
  ASSERT_EQ(cpu.size(), gpu.size()) << what;
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_LE(std::abs(gpu[i] - cpu[i]), tol * std::max(1.0, std::abs(cpu[i])))
        << what << " sum " << i << ": " << gpu[i] << " on the GPU, " << cpu[i] << " on the CPU";
}

TEST_F(CudaBackend, BatchNormForwardBackward) {
  const Shape shapes[] = {{7, 3, 25}, {64, 16, 1}, {3, 5, 1000}, {1, 1, 1}, {300, 4, 49}};
  for (const Shape& s : shapes)
    for (DType dt : kFloatTypes) {
      const int64_t c = s[1];
      Case cs("batchnorm " + shape_str(s), dt);
      Tensor x = cs.input(s, -2, 3), xg = cs.gpu(x);
      // The sums are in double on both sides: only the order of the additions differs.
      std::vector<double> sums, sums_g;
      ops::batchnorm_sums(x, c, sums);
      ops::batchnorm_sums(xg, c, sums_g);
      compare_sums(cs.name + ": forward sums", sums, sums_g, 1e-9);
      // Statistics as the layer forms them; gamma, beta f32 parameters.
      const double count = static_cast<double>(s[0] * s[2]);
      Tensor mean = Tensor::empty({c}), rstd = Tensor::empty({c});
      for (int64_t i = 0; i < c; ++i) {
        const double mu = sums[i] / count, var = std::max(sums[c + i] / count - mu * mu, 0.0);
        mean.data<float>()[i] = static_cast<float>(mu);
        rstd.data<float>()[i] = static_cast<float>(1.0 / std::sqrt(var + 1e-5));
      }
      Tensor gamma = cs.f32_input({c}, 0.5f, 1.5f), beta = cs.f32_input({c});
      Tensor meang = cs.gpu(mean, DType::f32), rstdg = cs.gpu(rstd, DType::f32),
             gammag = cs.gpu(gamma, DType::f32);
      Tensor y = Tensor::empty(s), yg = cs.poison(s);
      ops::batchnorm_forward(x, mean, rstd, gamma, beta, y);
      ops::batchnorm_forward(xg, meang, rstdg, gammag, cs.gpu(beta, DType::f32), yg);
      cs.check("y", y, yg);
      Tensor dy = cs.input(s), dyg = cs.gpu(dy);
      Tensor dgamma = cs.f32_input({c}), dbeta = cs.f32_input({c});
      Tensor dgammag = cs.gpu(dgamma, DType::f32), dbetag = cs.gpu(dbeta, DType::f32);
      std::vector<double> bsums, bsums_g;
      ops::batchnorm_backward_sums(dy, x, mean, rstd, bsums, dgamma, dbeta);
      ops::batchnorm_backward_sums(dyg, xg, meang, rstdg, bsums_g, dgammag, dbetag);
      compare_sums(cs.name + ": backward sums", bsums, bsums_g, 1e-6);
      cs.check("dgamma (accumulated)", dgamma, dgammag);
      cs.check("dbeta (accumulated)", dbeta, dbetag);
      // The same global sums on both sides, so dx is compared on its own.
      Tensor dx = Tensor::empty(s), dxg = cs.poison(s);
      ops::batchnorm_backward(dy, x, mean, rstd, gamma, bsums, count, dx);
      ops::batchnorm_backward(dyg, xg, meang, rstdg, gammag, bsums, count, dxg);
      cs.check("dx", dx, dxg);
    }
}

// ---- embedding, attention, residual add ---------------------------------------------------------

TEST_F(CudaBackend, EmbeddingForwardBackward) {
  struct E {
    int64_t n, seq, vocab, dim;
  };
  const E cases[] = {{3, 17, 65, 13}, {8, 256, 65, 384}, {1, 1, 2, 1}, {5, 33, 1000, 64}};
  for (const E& p : cases)
    for (DType dt : kFloatTypes) {
      Case cs("embedding n=" + std::to_string(p.n) + " seq=" + std::to_string(p.seq) +
                  " vocab=" + std::to_string(p.vocab) + " dim=" + std::to_string(p.dim),
              dt);
      Tensor ids = Tensor::empty({p.n, p.seq}, DType::i32);
      // A skewed draw, so some ids repeat many times and some never appear.
      std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(p.vocab - 1));
      for (int64_t i = 0; i < ids.numel(); ++i)
        ids.data<int32_t>()[i] = i % 3 ? pick(cs.rng) / 2 : pick(cs.rng);
      Tensor table = cs.f32_input({p.vocab, p.dim}), pos = cs.f32_input({p.seq + 3, p.dim});
      const Shape os{p.n, p.seq, p.dim};
      Tensor out = Tensor::empty(os), outg = cs.poison(os), idsg = ids.to(kGpu);
      Tensor tableg = cs.gpu(table, DType::f32), posg = cs.gpu(pos, DType::f32);
      ops::embedding_forward(ids, table, &pos, out);
      ops::embedding_forward(idsg, tableg, &posg, outg);
      cs.check("out", dt == DType::bf16 ? round_bf16(out) : out, outg);
      Tensor dout = cs.input(os), dtable = cs.f32_input({p.vocab, p.dim}),
             dpos = cs.f32_input({p.seq + 3, p.dim});
      Tensor dtableg = cs.gpu(dtable, DType::f32), dposg = cs.gpu(dpos, DType::f32);
      ops::embedding_backward(ids, dout, dtable, &dpos);
      ops::embedding_backward(idsg, cs.gpu(dout), dtableg, &dposg);
      cs.check("dtable", dtable, dtableg);
      cs.check("dpositions", dpos, dposg);
      // An id outside the table: out_of_range naming the position, as on the CPU.
      ids.data<int32_t>()[ids.numel() - 1] = static_cast<int32_t>(p.vocab);
      Tensor bad = ids.to(kGpu);
      EXPECT_THROW(ops::embedding_forward(bad, tableg, &posg, outg), std::out_of_range) << cs.name;
    }
}

TEST_F(CudaBackend, AttentionForwardBackward) {
  struct A {
    int64_t n, seq, heads, d;
  };
  // Sequence lengths that are and are not multiples of the kernels' tiles; head sizes up to 128,
  // and one that is not a multiple of 16.
  const A cases[] = {{2, 1, 1, 8},    {2, 17, 2, 16},   {1, 64, 4, 32}, {2, 100, 6, 64},
                     {1, 257, 2, 64}, {1, 130, 1, 128}, {1, 33, 3, 20}, {4, 256, 6, 64}};
  for (const A& p : cases)
    for (DType dt : kFloatTypes) {
      Case cs("attention n=" + std::to_string(p.n) + " seq=" + std::to_string(p.seq) +
                  " heads=" + std::to_string(p.heads) + " d=" + std::to_string(p.d),
              dt);
      const int64_t c = p.heads * p.d;
      const Shape qs{p.n, p.seq, 3 * c}, os{p.n, p.seq, c}, ls{p.n, p.heads, p.seq};
      Tensor qkv = cs.input(qs, -2, 2), qkvg = cs.gpu(qkv);
      Tensor out = Tensor::empty(os), lse = Tensor::empty(ls);
      Tensor outg = cs.poison(os), lseg = cs.poison(ls, DType::f32);
      ops::attention_forward(qkv, out, lse, p.heads);
      try {
        ops::attention_forward(qkvg, outg, lseg, p.heads);
        device_synchronize(kGpu);
      } catch (const std::exception& e) {
        ADD_FAILURE() << cs.name << ": " << e.what();
        continue;
      }
      cs.check("out", out, outg);
      cs.check("lse", lse, lseg);
      // Backward from the CPU's forward results on both sides (out rounded as the GPU stores it).
      if (dt == DType::bf16) out = round_bf16(out);
      Tensor dout = cs.input(os), dqkv = Tensor::empty(qs), dqkvg = cs.poison(qs);
      ops::attention_backward(qkv, out, dout, lse, dqkv, p.heads);
      ops::attention_backward(qkvg, cs.gpu(out), cs.gpu(dout), cs.gpu(lse, DType::f32), dqkvg,
                              p.heads);
      cs.check("dqkv", dqkv, dqkvg);
    }
}

TEST_F(CudaBackend, AddMayWriteInPlace) {
  for (int64_t n : kFlatSizes)
    for (DType dt : kFloatTypes) {
      Case cs("add n=" + std::to_string(n), dt);
      Tensor a = cs.input({n}), b = cs.input({n}), out = Tensor::empty({n});
      ops::add(a, b, out);
      Tensor ag = cs.gpu(a), bg = cs.gpu(b), outg = cs.poison({n});
      ops::add(ag, bg, outg);
      cs.check("out", dt == DType::bf16 ? round_bf16(out) : out, outg);
      ops::add(ag, bg, bg);
      cs.check("out in place", dt == DType::bf16 ? round_bf16(out) : out, bg);
    }
}

// ---- argument checks ----------------------------------------------------------------------------

TEST_F(CudaBackend, OpsRejectMixedDevices) {
  Tensor a = Tensor::zeros({4, 3}, DType::f32, kGpu), b = Tensor::zeros({3, 2}, DType::f32, kGpu);
  Tensor c = Tensor::zeros({4, 2}, DType::f32, kGpu), bias = Tensor::zeros({2}, DType::f32, kGpu);
  Tensor a_cpu = Tensor::zeros({4, 3}), c_cpu = Tensor::zeros({4, 2}),
         bias_cpu = Tensor::zeros({2});
  Tensor n_gpu = Tensor::zeros({4}, DType::f32, kGpu), n_cpu = Tensor::zeros({4});
  Tensor labels_cpu = Tensor::zeros({4}, DType::i32), labels = labels_cpu.to(kGpu);
  Tensor bf_cpu = Tensor::zeros({4}, DType::bf16);
  const std::vector<ops::ParamSegment> segs{{0, 4, true}};
  const ops::AdamWHyper adam{0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1};
  using E = std::invalid_argument;
  EXPECT_THROW(ops::gemm(a_cpu, false, b, false, c), E);
  EXPECT_THROW(ops::gemm(a, false, b, false, c_cpu), E);
  EXPECT_THROW(ops::gemm(a, false, b, false, c, 1.0f, 0.0f, &bias_cpu), E);
  EXPECT_THROW(ops::add_bias(c, bias_cpu), E);
  EXPECT_THROW(ops::add_bias(c_cpu, bias), E);
  EXPECT_THROW(ops::bias_grad(c, bias_cpu, false), E);
  EXPECT_THROW(ops::activation_forward(ops::Activation::gelu, c, c_cpu), E);
  EXPECT_THROW(ops::activation_backward(ops::Activation::relu, c, c_cpu, c), E);
  EXPECT_THROW(ops::dropout_forward(c, c_cpu, 0.5f, {}), E);
  EXPECT_THROW(ops::dropout_backward(c_cpu, c, 0.5f, {}), E);
  Tensor g3 = Tensor::zeros({3}, DType::f32, kGpu), g3_cpu = Tensor::zeros({3});
  EXPECT_THROW(ops::layernorm_forward(a, g3_cpu, g3, a, n_gpu, n_gpu, 1e-5f), E);
  EXPECT_THROW(ops::layernorm_backward(a, a, g3, n_gpu, n_gpu, a, g3, g3_cpu, false), E);
  Tensor logits = Tensor::zeros({4, 2}, DType::f32, kGpu);
  EXPECT_THROW(ops::softmax_cross_entropy(logits, labels_cpu, nullptr, 1.0f), E);
  EXPECT_THROW(ops::softmax_cross_entropy(logits, labels, &c_cpu, 1.0f), E);
  EXPECT_THROW(ops::mean_squared_error(c, c_cpu, nullptr, 1.0f), E);
  EXPECT_THROW(ops::mean_squared_error(c, c, &c_cpu, 1.0f), E);
  Tensor m = Tensor::zeros({4}, DType::f32, kGpu), v = Tensor::zeros({4}, DType::f32, kGpu);
  Tensor bf = Tensor::zeros({4}, DType::bf16, kGpu);
  EXPECT_THROW(ops::adamw_update(n_gpu, n_gpu, n_cpu, v, segs, adam), E);
  EXPECT_THROW(ops::adamw_update(n_gpu, n_gpu, m, v, segs, adam, &bf_cpu), E);
  EXPECT_THROW(ops::sgd_update(n_gpu, n_cpu, v, segs, {0.1f, 0.9f, 0.0f, false}), E);
  EXPECT_THROW(ops::sgd_update(n_gpu, m, v, segs, {0.1f, 0.9f, 0.0f, false}, &bf_cpu), E);
  EXPECT_THROW(ops::convert(n_gpu, bf_cpu), E);
  EXPECT_THROW(ops::convert(bf_cpu, bf), E);
}

// ---- NCCL at world size 1 -----------------------------------------------------------------------

TEST_F(CudaBackend, NcclWorldSizeOneIsTheIdentity) {
  auto host = make_single_communicator();
  auto nccl = make_nccl_communicator(*host, 30.0);
  ASSERT_EQ(nccl->size(), 1);
  EXPECT_EQ(nccl->rank(), 0);
  EXPECT_TRUE(nccl->device_buffers());

  Case cs("nccl", DType::f32);
  const int64_t n = 100003;
  const Tensor x = cs.input({n});
  Tensor xg = x.to(kGpu);
  // Two disjoint all-reduces in flight at once, then one wait: the sum over one rank.
  nccl->allreduce_sum_start(xg.data<float>(), n / 3);
  nccl->allreduce_sum_start(xg.data<float>() + n / 3, n - n / 3);
  nccl->wait_all();
  expect_untouched("nccl allreduce_sum_start/wait_all", x, xg);

  double d[3] = {1.5, -2.25e-300, 1e300};
  nccl->allreduce_sum(d, 3);
  EXPECT_EQ(d[0], 1.5);
  EXPECT_EQ(d[1], -2.25e-300);
  EXPECT_EQ(d[2], 1e300);

  // The reducer over several buckets (0.001 MB: 262 floats each) leaves the gradients as they are.
  const Tensor grads = cs.input({n});
  Tensor grads_g = grads.to(kGpu);
  GradReducer reducer(*nccl, grads_g, 0.001);
  EXPECT_GT(reducer.num_buckets(), 1u);
  for (int step = 0; step < 2; ++step) {
    reducer.begin_step();
    for (int64_t off : {n - 1, n * 2 / 3, n / 5, int64_t{0}}) reducer.grads_ready_from(off);
    reducer.finish();
    device_synchronize(kGpu);
    expect_untouched("GradReducer step " + std::to_string(step), grads, grads_g);
  }
}

// ---- last: a fault in a kernel ends every later test of the process
// ------------------------------

TEST_F(CudaBackend, GemmMisalignedBias) { gemm_cases("bias"); }

}  // namespace
}  // namespace tern
