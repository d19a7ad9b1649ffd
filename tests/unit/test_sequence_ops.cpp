// The sequence ops on the CPU: embedding and causal multi-head attention, against direct
// definitions and finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <tuple>
#include <vector>

#include "tern/ops.h"
#include "test_util.h"

namespace tern {
namespace {

using testing::random_tensor;

TEST(Embedding, GathersRowsAndScattersGradients) {
  Tensor table = random_tensor({5, 3}, 1), pos = random_tensor({4, 3}, 2);
  Tensor ids = Tensor::empty({2, 3}, DType::i32);
  const int32_t id[] = {4, 0, 4, 1, 1, 2};
  std::copy(std::begin(id), std::end(id), ids.data<int32_t>());
  Tensor out = Tensor::empty({2, 3, 3});
  ops::embedding_forward(ids, table, &pos, out);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 3; ++j)
      EXPECT_FLOAT_EQ(out.data<float>()[i * 3 + j],
                      table.data<float>()[id[i] * 3 + j] + pos.data<float>()[(i % 3) * 3 + j]);
  Tensor dout = random_tensor({2, 3, 3}, 3), dt = Tensor::zeros({5, 3}), dp = Tensor::zeros({4, 3});
  ops::embedding_backward(ids, dout, dt, &dp);
  const float* g = dout.data<float>();
  // token 4 appears at (0,0) and (0,2); token 3 nowhere; position 1 at (0,1) and (1,1)
  EXPECT_FLOAT_EQ(dt.data<float>()[4 * 3], g[0] + g[2 * 3]);
  EXPECT_FLOAT_EQ(dt.data<float>()[3 * 3], 0.0f);
  EXPECT_FLOAT_EQ(dp.data<float>()[1 * 3 + 2], g[1 * 3 + 2] + g[4 * 3 + 2]);
  EXPECT_FLOAT_EQ(dp.data<float>()[3 * 3], 0.0f);  // position 3 is past T = 3
  ids.data<int32_t>()[5] = 5;
  EXPECT_THROW(ops::embedding_forward(ids, table, nullptr, out), std::out_of_range);
}

// Attention by its definition, in double: softmax over s <= t of q_t . k_s / sqrt(D), times v.
std::vector<double> naive_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    int64_t heads) {
  const int64_t n = q.dim(0), t = q.dim(1), c = q.dim(2), d = c / heads;
  std::vector<double> out(q.numel(), 0.0);
  auto el = [&](const Tensor& x, int64_t b, int64_t i, int64_t h, int64_t j) {
    return double(x.data<float>()[(b * t + i) * c + h * d + j]);
  };
  for (int64_t b = 0; b < n; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < t; ++i) {
        std::vector<double> w(i + 1);
        double m = -1e300, sum = 0;
        for (int64_t s = 0; s <= i; ++s) {
          double dot = 0;
          for (int64_t j = 0; j < d; ++j) dot += el(q, b, i, h, j) * el(k, b, s, h, j);
          w[s] = dot / std::sqrt(double(d));
          m = std::max(m, w[s]);
        }
        for (auto& x : w) sum += (x = std::exp(x - m));
        for (int64_t s = 0; s <= i; ++s)
          for (int64_t j = 0; j < d; ++j)
            out[(b * t + i) * c + h * d + j] += w[s] / sum * el(v, b, s, h, j);
      }
  return out;
}

TEST(Attention, MatchesTheDefinitionAndIsCausal) {
  for (auto [n, t, c, heads] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 7, 12, 3}, {1, 1, 4, 1}, {3, 5, 8, 2}}) {
    Tensor q = random_tensor({n, t, c}, 4, -2, 2), k = random_tensor({n, t, c}, 5, -2, 2);
    Tensor v = random_tensor({n, t, c}, 6), out = Tensor::empty({n, t, c});
    Tensor lse = Tensor::empty({n, heads, t});
    ops::attention_forward(q, k, v, out, lse, heads);
    const std::vector<double> want = naive_attention(q, k, v, heads);
    for (int64_t i = 0; i < out.numel(); ++i)
      EXPECT_NEAR(out.data<float>()[i], want[i], 1e-5) << "element " << i;
    // Changing the last position's keys and values changes no earlier output.
    Tensor k2 = testing::copy_of(k), v2 = testing::copy_of(v), out2 = Tensor::empty(out.shape());
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < c; ++j) {
        k2.data<float>()[(b * t + t - 1) * c + j] += 1.0f;
        v2.data<float>()[(b * t + t - 1) * c + j] -= 1.0f;
      }
    ops::attention_forward(q, k2, v2, out2, lse, heads);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < (t - 1) * c; ++i)
        EXPECT_EQ(out.data<float>()[b * t * c + i], out2.data<float>()[b * t * c + i]);
  }
  Tensor q = Tensor::zeros({1, 2, 5}), out = Tensor::empty({1, 2, 5}),
         lse = Tensor::empty({1, 2, 2});
  EXPECT_THROW(ops::attention_forward(q, q, q, out, lse, 2), std::invalid_argument);
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  const int64_t n = 2, t = 5, c = 6, heads = 2;
  Tensor q = random_tensor({n, t, c}, 7), k = random_tensor({n, t, c}, 8);
  Tensor v = random_tensor({n, t, c}, 9), r = random_tensor({n, t, c}, 10);
  Tensor out = Tensor::empty({n, t, c}), lse = Tensor::empty({n, heads, t});
  auto loss = [&] {  // L = sum(out * r), so dL/dout = r
    ops::attention_forward(q, k, v, out, lse, heads);
    double l = 0;
    for (int64_t i = 0; i < out.numel(); ++i)
      l += double(out.data<float>()[i]) * r.data<float>()[i];
    return l;
  };
  loss();
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(q.shape()),
         dv = Tensor::empty(q.shape());
  ops::attention_backward(q, k, v, out, r, lse, dq, dk, dv, heads);
  for (auto [x, dx, name] :
       {std::tuple<Tensor*, Tensor*, const char*>{&q, &dq, "q"}, {&k, &dk, "k"}, {&v, &dv, "v"}})
    for (int64_t i = 0; i < x->numel(); ++i) {
      const double numeric = testing::numeric_grad(x->data<float>()[i], loss);
      const double analytic = dx->data<float>()[i];
      EXPECT_LT(testing::rel_err(analytic, numeric), 2e-3)
          << name << "[" << i << "]: analytic " << analytic << " numeric " << numeric;
    }
}

}  // namespace
}  // namespace tern
