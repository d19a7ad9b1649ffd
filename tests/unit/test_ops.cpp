#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>
#include <vector>

#include "tern/compute/ops.h"
#include "tern/nn/layers.h"
#include "test_util.h"

namespace tern {
namespace {

using testing::random_tensor;

float at(const Tensor& t, int64_t r, int64_t c) { return t.data<float>()[r * t.dim(1) + c]; }

TEST(Gemm, AllTransposesMatchNaive) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t m = 7, n = 5, k = 9;
      Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, 1);
      Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, 2);
      Tensor c = random_tensor({m, n}, 3);
      Tensor c0 = testing::copy_of(c);
      ops::gemm(a, ta, b, tb, c, 0.5f, 2.0f);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t p = 0; p < k; ++p)
            s += double(ta ? at(a, p, i) : at(a, i, p)) * (tb ? at(b, j, p) : at(b, p, j));
          EXPECT_NEAR(at(c, i, j), 0.5 * s + 2.0 * at(c0, i, j), 1e-5) << ta << tb << i << j;
        }
    }
}

TEST(Gemm, RejectsMismatchedShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 2}), c = Tensor::zeros({2, 2});
  EXPECT_THROW(ops::gemm(a, false, b, false, c), std::invalid_argument);
}

TEST(Bias, AddAndGrad) {
  Tensor y = Tensor::zeros({3, 2});
  Tensor b = random_tensor({2}, 4);
  ops::add_bias(y, b);
  EXPECT_EQ(at(y, 2, 1), b.data<float>()[1]);
  Tensor db = Tensor::zeros({2});
  ops::bias_grad(y, db, false);
  EXPECT_FLOAT_EQ(db.data<float>()[0], 3 * b.data<float>()[0]);
  ops::bias_grad(y, db, true);
  EXPECT_FLOAT_EQ(db.data<float>()[0], 6 * b.data<float>()[0]);
}

TEST(LayerNorm, NormalisesRows) {
  Tensor x = random_tensor({4, 33}, 5, -3, 5);
  Tensor g = Tensor::empty({33}), b = Tensor::zeros({33});
  for (int i = 0; i < 33; ++i) g.data<float>()[i] = 1.0f;
  Tensor y = Tensor::empty({4, 33}), mean = Tensor::empty({4}), rstd = Tensor::empty({4});
  ops::layernorm_forward(x, g, b, y, mean, rstd, 1e-5f);
  for (int r = 0; r < 4; ++r) {
    double s = 0, s2 = 0;
    for (int c = 0; c < 33; ++c) s += at(y, r, c), s2 += at(y, r, c) * at(y, r, c);
    EXPECT_NEAR(s / 33, 0.0, 1e-5);
    EXPECT_NEAR(s2 / 33, 1.0, 1e-3);
  }
}

TEST(SoftmaxCrossEntropy, ValueAccuracyAndLabelCheck) {
  Tensor logits = Tensor::empty({2, 3});
  float v[] = {1, 2, 3, 0, 0, 0};
  std::copy_n(v, 6, logits.data<float>());
  Tensor labels = Tensor::empty({2}, DType::i32);
  labels.data<int32_t>()[0] = 2;
  labels.data<int32_t>()[1] = 1;
  ops::LossStats s = ops::softmax_cross_entropy(logits, labels, nullptr, 1.0f);
  const double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
  EXPECT_NEAR(s.loss_sum, l0 + std::log(3.0), 1e-6);
  EXPECT_EQ(s.correct, 1);  // row 0 right; row 1 ties go to class 0
  labels.data<int32_t>()[1] = 3;
  EXPECT_THROW(ops::softmax_cross_entropy(logits, labels, nullptr, 1.0f), std::out_of_range);
}

TEST(Dropout, MaskFollowsGlobalSampleIndex) {
  // Row i of a batch starting at sample s must equal row 0 of a batch starting at s + i: this is
  // what keeps a W-rank run equal to a 1-rank run.
  Tensor x = random_tensor({6, 37}, 6);
  Tensor y = Tensor::empty({6, 37});
  ops::dropout_forward(x, y, 0.4f, {42, 3, 100});
  for (int64_t i = 0; i < 6; ++i) {
    Tensor xi = x.rows(i, 1), yi = Tensor::empty({1, 37});
    ops::dropout_forward(xi, yi, 0.4f, {42, 3, 100 + i});
    for (int c = 0; c < 37; ++c) EXPECT_EQ(at(y, i, c), at(yi, 0, c));
  }
}

TEST(Dropout, DropRateAndScale) {
  Tensor x = Tensor::empty({200, 100});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = 1.0f;
  Tensor y = Tensor::empty({200, 100});
  ops::dropout_forward(x, y, 0.25f, {7, 0, 0});
  int64_t zeros = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    float v = y.data<float>()[i];
    if (v == 0.0f)
      ++zeros;
    else
      EXPECT_FLOAT_EQ(v, 1.0f / 0.75f);
  }
  EXPECT_NEAR(double(zeros) / y.numel(), 0.25, 0.01);
  ops::dropout_forward(x, y, 0.25f, {8, 0, 0});
  int64_t zeros2 = 0;
  for (int64_t i = 0; i < y.numel(); ++i) zeros2 += y.data<float>()[i] == 0.0f;
  EXPECT_NE(zeros, zeros2) << "another seed gives another mask";
}

TEST(AdamW, MatchesReferenceWithDecayMask) {
  const int64_t n = 40;
  Tensor p = random_tensor({n}, 7), g = random_tensor({n}, 8);
  Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
  std::vector<double> rp(p.data<float>(), p.data<float>() + n), rm(n, 0), rv(n, 0);
  std::vector<ops::ParamSegment> segs{{0, 24, true}, {32, 8, false}};  // 24..31 is padding
  const float lr = 0.01f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, wd = 0.1f;
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw_update(p, g, m, v, segs, {lr, b1, b2, eps, wd, step});
    for (const auto& s : segs)
      for (int64_t i = s.offset; i < s.offset + s.count; ++i) {
        double gi = g.data<float>()[i];
        if (s.decay) rp[i] *= 1 - lr * wd;
        rm[i] = b1 * rm[i] + (1 - b1) * gi;
        rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
        double mh = rm[i] / (1 - std::pow(b1, step)), vh = rv[i] / (1 - std::pow(b2, step));
        rp[i] -= lr * mh / (std::sqrt(vh) + eps);
      }
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(p.data<float>()[i], rp[i], 1e-5) << i;
}

TEST(Sgd, MomentumAndNesterov) {
  for (bool nesterov : {false, true}) {
    Tensor p = random_tensor({8}, 9), g = random_tensor({8}, 10), vel = Tensor::zeros({8});
    std::vector<double> rp(p.data<float>(), p.data<float>() + 8), rv(8, 0);
    for (int step = 0; step < 3; ++step) {
      ops::sgd_update(p, g, vel, {{0, 8, true}}, {0.1f, 0.9f, 0.01f, nesterov});
      for (int i = 0; i < 8; ++i) {
        double gi = g.data<float>()[i] + 0.01 * rp[i];
        rv[i] = 0.9 * rv[i] + gi;
        rp[i] -= 0.1 * (nesterov ? gi + 0.9 * rv[i] : rv[i]);
      }
    }
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(p.data<float>()[i], rp[i], 1e-5);
  }
}

TEST(Reductions, SumSquaresAndScale) {
  Tensor x = random_tensor({1001}, 11);
  double ref = 0;
  for (int64_t i = 0; i < x.numel(); ++i) ref += double(x.data<float>()[i]) * x.data<float>()[i];
  EXPECT_NEAR(ops::sum_squares(x), ref, 1e-9 * ref);
  ops::scale(x, 2.0f);
  EXPECT_NEAR(ops::sum_squares(x), 4 * ref, 1e-8 * ref);
}

TEST(Ops, RejectWrongDtype) {
  Tensor xi = Tensor::zeros({2, 2}, DType::i32), y = Tensor::zeros({2, 2});
  EXPECT_THROW(ops::activation_forward(ops::Activation::relu, xi, y), std::invalid_argument);
}

// Convolution against the definition, summed directly, for strides and paddings.
TEST(Conv2d, MatchesDirectSum) {
  for (auto [stride, pad] : {std::pair<int64_t, int64_t>{1, 0}, {1, 1}, {2, 1}, {2, 0}}) {
    const int64_t n = 2, c = 3, h = 7, w = 6, k = 4, kh = 3, kw = 3;
    const int64_t oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
    Tensor x = random_tensor({n, c, h, w}, 11), wt = random_tensor({k, c, kh, kw}, 12);
    Tensor b = random_tensor({k}, 13), y = Tensor::empty({n, k, oh, ow});
    ops::conv2d_forward(x, wt, &b, y, {stride, pad});
    const float* X = x.data<float>();
    const float* W = wt.data<float>();
    for (int64_t in = 0; in < n; ++in)
      for (int64_t ok = 0; ok < k; ++ok)
        for (int64_t oy = 0; oy < oh; ++oy)
          for (int64_t ox = 0; ox < ow; ++ox) {
            double s = b.data<float>()[ok];
            for (int64_t ic = 0; ic < c; ++ic)
              for (int64_t i = 0; i < kh; ++i)
                for (int64_t j = 0; j < kw; ++j) {
                  const int64_t yy = oy * stride - pad + i, xx = ox * stride - pad + j;
                  if (yy >= 0 && yy < h && xx >= 0 && xx < w)
                    s += double(X[((in * c + ic) * h + yy) * w + xx]) *
                         W[((ok * c + ic) * kh + i) * kw + j];
                }
            EXPECT_NEAR(y.data<float>()[((in * k + ok) * oh + oy) * ow + ox], s, 1e-4)
                << "stride " << stride << " pad " << pad;
          }
  }
  Tensor x = Tensor::zeros({1, 2, 4, 4}), wt = Tensor::zeros({3, 3, 3, 3}),
         y = Tensor::zeros({1, 3, 2, 2});
  EXPECT_THROW(ops::conv2d_forward(x, wt, nullptr, y, {1, 0}), std::invalid_argument);
}

TEST(Pool2d, MaxAndAverageWindows) {
  // One channel, 3 x 4: windows of 2 with stride 2 -> 1 x 2 (the last row does not fit).
  Tensor x = Tensor::empty({1, 1, 3, 4});
  const float v[] = {1, 5, 2, 2, 3, 4, 8, 2, 9, 9, 9, 9};
  std::copy(std::begin(v), std::end(v), x.data<float>());
  Tensor y = Tensor::empty({1, 1, 1, 2});
  ops::pool2d_forward(ops::Pool::max, x, y, 2, 2);
  EXPECT_EQ(y.data<float>()[0], 5.0f);
  EXPECT_EQ(y.data<float>()[1], 8.0f);
  ops::pool2d_forward(ops::Pool::avg, x, y, 2, 2);
  EXPECT_FLOAT_EQ(y.data<float>()[0], 13.0f / 4);
  EXPECT_FLOAT_EQ(y.data<float>()[1], 14.0f / 4);
  // Max pooling's gradient goes to the first maximum; a tie in the second window: 2, 2, 8, 2.
  Tensor dy = Tensor::empty({1, 1, 1, 2}), dx = Tensor::empty({1, 1, 3, 4});
  dy.data<float>()[0] = 1.5f;
  dy.data<float>()[1] = -2.0f;
  ops::pool2d_backward(ops::Pool::max, x, dy, dx, 2, 2);
  const float want[] = {0, 1.5f, 0, 0, 0, 0, -2.0f, 0, 0, 0, 0, 0};
  for (int i = 0; i < 12; ++i) EXPECT_EQ(dx.data<float>()[i], want[i]) << i;
}

// Training normalises with the batch's statistics and moves the running ones towards them;
// inference normalises with the running ones.
TEST(BatchNorm, RunningStatisticsAndInference) {
  LayerSpec spec = LayerSpec::parse("batchnorm momentum=0.5", 0);
  auto layer = make_layer(spec, {2, 3});  // 2 channels of 3 values
  Tensor params = Tensor::empty({8}), grads = Tensor::zeros({8});
  const float init[] = {1, 1, 0, 0, 0, 0, 1, 1};  // weight, bias, running mean, running var
  std::copy(std::begin(init), std::end(init), params.data<float>());
  std::vector<Tensor> p, g;
  for (int i = 0; i < 4; ++i)
    p.push_back(params.slice(2 * i, {2})), g.push_back(grads.slice(2 * i, {2}));
  layer->bind(p, g, p);
  layer->reserve(2);
  Tensor x = Tensor::empty({2, 2, 3}), y = Tensor::empty({2, 2, 3});
  const float xs[] = {1, 2, 3, 10, 10, 10, 5, 6, 7, 20, 20, 20};  // channel 0: mean 4; 1: 15
  std::copy(std::begin(xs), std::end(xs), x.data<float>());
  layer->forward(x, y, StepContext{true, 0, 0, nullptr});
  // channel 0: values 1 2 3 5 6 7, mean 4, biased variance 14/3
  const float rstd0 = 1.0f / std::sqrt(14.0f / 3 + 1e-5f);
  EXPECT_NEAR(y.data<float>()[0], (1 - 4) * rstd0, 1e-5);
  EXPECT_NEAR(params.data<float>()[4], 0.5f * 4, 1e-5);                     // running mean
  EXPECT_NEAR(params.data<float>()[6], 0.5f * 1 + 0.5f * 28.0f / 5, 1e-4);  // unbiased variance
  EXPECT_NEAR(params.data<float>()[5], 0.5f * 15, 1e-5);
  layer->forward(x, y, StepContext{false, 0, 0, nullptr});
  const float run_rstd0 = 1.0f / std::sqrt(params.data<float>()[6] + 1e-5f);
  EXPECT_NEAR(y.data<float>()[0], (1 - params.data<float>()[4]) * run_rstd0, 1e-5);
}

// tanh (and GELU through it) is computed without libm's scalar calls: its error against tanh in
// double stays under 1e-6 relative across the range, tiny and huge inputs included.
TEST(Activation, TanhIsAccurateEverywhere) {
  std::vector<float> xs;
  for (float x = -20.0f; x <= 20.0f; x += 0.001f) xs.push_back(x);
  for (float x : {0.0f, 1e-30f, -1e-20f, 1e-8f, 0.2499999f, 0.25f, 0.2500001f, 87.0f, -1e4f})
    xs.push_back(x);
  Tensor x = Tensor::empty({static_cast<int64_t>(xs.size())}), y = Tensor::empty(x.shape());
  std::copy(xs.begin(), xs.end(), x.data<float>());
  ops::activation_forward(ops::Activation::tanh, x, y);
  double worst = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double ref = std::tanh(double(xs[i]));
    const double err = std::abs(y.data<float>()[i] - ref) / std::max(std::abs(ref), 1e-38);
    worst = std::max(worst, err);
  }
  EXPECT_LT(worst, 1e-6);
}

}  // namespace
}  // namespace tern
