// The sequence ops on the CPU: embedding and causal multi-head attention, against direct
// definitions and finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <tuple>
#include <vector>

#include "tern/compute/ops.h"
#include "tern/train/trainer.h"
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

// q, k and v [n, t, c] side by side in one [n, t, 3c] tensor, as the qkv projection writes them.
Tensor pack(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t rows = q.dim(0) * q.dim(1), c = q.dim(2);
  Tensor qkv = Tensor::empty({q.dim(0), q.dim(1), 3 * c});
  int part = 0;
  for (const Tensor* x : {&q, &k, &v}) {
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(x->data<float>() + r * c, c, qkv.data<float>() + r * 3 * c + part * c);
    ++part;
  }
  return qkv;
}

TEST(Attention, MatchesTheDefinitionAndIsCausal) {
  for (auto [n, t, c, heads] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 7, 12, 3}, {1, 1, 4, 1}, {3, 5, 8, 2}}) {
    Tensor q = random_tensor({n, t, c}, 4, -2, 2), k = random_tensor({n, t, c}, 5, -2, 2);
    Tensor v = random_tensor({n, t, c}, 6), out = Tensor::empty({n, t, c});
    Tensor lse = Tensor::empty({n, heads, t});
    ops::attention_forward(pack(q, k, v), out, lse, heads);
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
    ops::attention_forward(pack(q, k2, v2), out2, lse, heads);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < (t - 1) * c; ++i)
        EXPECT_EQ(out.data<float>()[b * t * c + i], out2.data<float>()[b * t * c + i]);
  }
  Tensor qkv = Tensor::zeros({1, 2, 15}), out = Tensor::empty({1, 2, 5}),
         lse = Tensor::empty({1, 2, 2});
  EXPECT_THROW(ops::attention_forward(qkv, out, lse, 2), std::invalid_argument);
  Tensor not_packed = Tensor::zeros({1, 2, 7});
  EXPECT_THROW(ops::attention_forward(not_packed, out, lse, 1), std::invalid_argument);
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  const int64_t n = 2, t = 5, c = 6, heads = 2;
  Tensor qkv = random_tensor({n, t, 3 * c}, 7), r = random_tensor({n, t, c}, 10);
  Tensor out = Tensor::empty({n, t, c}), lse = Tensor::empty({n, heads, t});
  auto loss = [&] {  // L = sum(out * r), so dL/dout = r
    ops::attention_forward(qkv, out, lse, heads);
    double l = 0;
    for (int64_t i = 0; i < out.numel(); ++i)
      l += double(out.data<float>()[i]) * r.data<float>()[i];
    return l;
  };
  loss();
  Tensor dqkv = Tensor::empty(qkv.shape());
  ops::attention_backward(qkv, out, r, lse, dqkv, heads);
  const char* part[] = {"q", "k", "v"};
  for (int64_t i = 0; i < qkv.numel(); ++i) {
    const double numeric = testing::numeric_grad(qkv.data<float>()[i], loss);
    const double analytic = dqkv.data<float>()[i];
    EXPECT_LT(testing::rel_err(analytic, numeric), 2e-3)
        << part[i % (3 * c) / c] << " at " << i << ": analytic " << analytic << " numeric "
        << numeric;
  }
}

// The CPU ops split their work over threads (run.threads) in pieces whose results do not depend
// on the thread that computes them: 1 and 3 threads give bitwise the same results.
TEST(Threads, ResultsDoNotDependOnTheThreadCount) {
  auto run = [](int threads) {
    configure_cpu_threads(threads, 1);
    std::vector<Tensor> out;
    Tensor qkv = random_tensor({3, 37, 3 * 24}, 21), o = Tensor::empty({3, 37, 24}),
           lse = Tensor::empty({3, 4, 37}), dqkv = Tensor::empty(qkv.shape());
    ops::attention_forward(qkv, o, lse, 4);
    ops::attention_backward(qkv, o, random_tensor({3, 37, 24}, 22), lse, dqkv, 4);
    Tensor x = random_tensor({999, 40}, 23), y = Tensor::empty(x.shape()),
           dx = Tensor::empty(x.shape());
    Tensor gamma = random_tensor({40}, 24), beta = random_tensor({40}, 25);
    Tensor mean = Tensor::empty({999}), rstd = Tensor::empty({999});
    Tensor dgamma = Tensor::zeros({40}), dbeta = Tensor::zeros({40});
    ops::layernorm_forward(x, gamma, beta, y, mean, rstd, 1e-5f);
    ops::layernorm_backward(random_tensor(x.shape(), 26), x, gamma, mean, rstd, dx, dgamma, dbeta,
                            true);
    Tensor big = random_tensor({100003}, 27), act = Tensor::empty({100003}),
           dact = Tensor::empty({100003});
    ops::activation_forward(ops::Activation::gelu, big, act);
    ops::activation_backward(ops::Activation::gelu, big, random_tensor({100003}, 28), dact);
    Tensor p = random_tensor({100003}, 29), m = Tensor::zeros({100003}),
           v = Tensor::zeros({100003});
    ops::adamw_update(p, random_tensor({100003}, 30), m, v,
                      {{0, 70000, true}, {70000, 30003, false}},
                      {0.01f, 0.9f, 0.99f, 1e-8f, 0.1f, 1});
    out = {o, lse, dqkv, y, mean, rstd, dx, dgamma, dbeta, act, dact, p, m, v};
    return out;
  };
  const std::vector<Tensor> one = run(1), three = run(3);
  configure_cpu_threads(1, 1);
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_EQ(std::memcmp(one[i].raw(), three[i].raw(), one[i].nbytes()), 0) << "output " << i;
}

TEST(Add, AddsElementwiseAndMayWriteInPlace) {
  Tensor a = random_tensor({3, 5}, 11), b = random_tensor({3, 5}, 12), out = Tensor::empty({3, 5});
  ops::add(a, b, out);
  for (int64_t i = 0; i < 15; ++i)
    EXPECT_EQ(out.data<float>()[i], a.data<float>()[i] + b.data<float>()[i]);
  ops::add(a, b, b);
  for (int64_t i = 0; i < 15; ++i) EXPECT_EQ(b.data<float>()[i], out.data<float>()[i]);
  Tensor wrong = Tensor::empty({4, 5});
  EXPECT_THROW(ops::add(a, wrong, out), std::invalid_argument);
}

}  // namespace
}  // namespace tern
