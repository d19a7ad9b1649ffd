// Finite-difference gradient checks for every registered layer and loss, and for a whole model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "tern/base/error.h"
#include "tern/nn/layers.h"
#include "tern/nn/losses.h"
#include "tern/nn/model.h"
#include "test_util.h"

namespace tern {
namespace {

using testing::random_tensor;

// The layer specs checked here, with a per-sample input shape; a layer type missing from this
// list fails the coverage test.
struct LayerCase {
  std::string spec;
  Shape in;
  // Parameters are drawn from +-0.8 x this: attention's logits grow with the square of its
  // weights, and central differences lose accuracy where the softmax curves sharply.
  float param_scale = 1.0f;
  // > 0: the input is token ids in [0, vocab) (no input gradient to check).
  int64_t vocab = 0;
};
const std::vector<LayerCase> kLayerCases = {
    {"linear out=5", {6}},
    {"linear out=4 bias=false", {6}},
    {"relu", {6}},
    {"gelu", {6}},
    {"tanh", {6}},
    {"dropout p=0.3", {6}},
    {"layernorm", {6}},
    {"reshape to=2x3", {6}},
    {"flatten", {2, 2, 3}},
    {"conv2d out=3 k=3 pad=1", {2, 5, 5}},
    {"conv2d out=2 k=2 stride=2 bias=false", {3, 5, 4}},
    {"maxpool2d k=2", {2, 4, 5}},
    {"avgpool2d k=2 stride=1", {2, 3, 4}},
    {"batchnorm", {2, 2, 3}},
    {"batchnorm momentum=0.2", {2, 3, 2}},
    {"linear out=3", {4, 5}},
    {"attention heads=2", {4, 6}, 0.3f},
    {"attention heads=1 bias=false", {3, 4}, 0.3f},
    {"transformer_block heads=2", {3, 4}, 0.3f},
    {"transformer_block heads=2 bias=true", {3, 4}, 0.3f},
    {"embedding vocab=7 dim=3", {4}, 1.0f, 7},
};

using testing::numeric_grad;
using testing::rel_err;
constexpr double kTol = 2e-3;

struct LayerHarness {
  std::unique_ptr<Layer> layer;
  Tensor params, grads;
  std::vector<std::pair<int64_t, int64_t>> ranges;  // (offset, count) per parameter
};

LayerHarness build(const std::string& text, const Shape& in, float param_scale = 1.0f) {
  LayerSpec spec = LayerSpec::parse(text, 2);
  LayerHarness h;
  h.layer = make_layer(spec, in);
  int64_t total = 0;
  for (const auto& p : h.layer->param_specs()) total += shape_numel(p.shape);
  h.params = random_tensor({total}, 77, -0.8f * param_scale, 0.8f * param_scale);
  h.grads = Tensor::zeros({total});
  std::vector<Tensor> pv, gv;
  int64_t off = 0;
  for (const auto& p : h.layer->param_specs()) {
    pv.push_back(h.params.slice(off, p.shape));
    gv.push_back(h.grads.slice(off, p.shape));
    h.ranges.push_back({off, shape_numel(p.shape)});
    off += shape_numel(p.shape);
  }
  h.layer->bind(pv, gv, pv);
  return h;
}

TEST(GradCheck, EveryRegisteredLayerIsCovered) {
  std::set<std::string> covered;
  for (const auto& c : kLayerCases) covered.insert(LayerSpec::parse(c.spec, 0).type());
  for (const auto& [name, info] : layer_registry())
    EXPECT_TRUE(covered.count(name)) << "layer '" << name << "' has no gradient check";
}

void PrintTo(const LayerCase& c, std::ostream* os) { *os << c.spec; }

class LayerGradCheck : public ::testing::TestWithParam<LayerCase> {};

Shape batch_of(int64_t rows, const Shape& per_sample) {
  Shape s = per_sample;
  s.insert(s.begin(), rows);
  return s;
}

TEST_P(LayerGradCheck, MatchesFiniteDifferences) {
  const int64_t rows = 3;
  const LayerCase& c = GetParam();
  LayerHarness h = build(c.spec, c.in, c.param_scale);
  h.layer->reserve(rows);
  // Inputs kept away from 0 so relu's kink is not inside the finite-difference step.
  Tensor x = random_tensor(batch_of(rows, c.in), 1, 0.1f, 1.0f);
  for (int64_t i = 0; i < x.numel(); i += 2) x.data<float>()[i] *= -1.0f;
  if (c.spec.rfind("maxpool", 0) == 0) {
    // Distinct values 0.05 apart: no window's maximum changes within the difference step.
    std::vector<float> v(x.numel());
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.05f * static_cast<float>(i) - 1.0f;
    std::shuffle(v.begin(), v.end(), std::mt19937(5));
    std::copy(v.begin(), v.end(), x.data<float>());
  }
  if (c.vocab > 0) {
    x = Tensor::empty(batch_of(rows, c.in), DType::i32);
    for (int64_t i = 0; i < x.numel(); ++i)
      x.data<int32_t>()[i] = static_cast<int32_t>((i * 5) % c.vocab);
  }
  const Shape out_shape = batch_of(rows, h.layer->out_shape());
  Tensor r = random_tensor(out_shape, 2);  // L = sum(y * r), so dL/dy = r
  StepContext ctx{true, 99, 1000, nullptr};

  auto loss = [&]() {
    Tensor y = Tensor::empty(out_shape);
    h.layer->forward(x, y, ctx);
    double l = 0;
    for (int64_t i = 0; i < y.numel(); ++i) l += double(y.data<float>()[i]) * r.data<float>()[i];
    return l;
  };
  Tensor y = Tensor::empty(out_shape), dx = Tensor::empty(x.shape());
  h.layer->forward(x, y, ctx);
  h.grads.zero_();
  h.layer->backward(x, y, r, c.vocab > 0 ? nullptr : &dx, ctx);

  auto check = [&](Tensor& t, const Tensor& analytic, const std::string& what) {
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double numeric = numeric_grad(t.data<float>()[i], loss);
      EXPECT_LT(rel_err(analytic.data<float>()[i], numeric), kTol)
          << c.spec << " " << what << "[" << i << "]: analytic " << analytic.data<float>()[i]
          << " numeric " << numeric;
    }
  };
  if (c.vocab == 0) check(x, dx, "input");
  for (size_t k = 0; k < h.ranges.size(); ++k) {
    Tensor p = h.params.slice(h.ranges[k].first, {h.ranges[k].second});
    Tensor g = h.grads.slice(h.ranges[k].first, {h.ranges[k].second});
    check(p, g, "param" + std::to_string(k));
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, LayerGradCheck, ::testing::ValuesIn(kLayerCases),
                         [](const auto& info) {
                           std::string n = info.param.spec;
                           for (char& c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(GradCheck, EveryLossMatchesFiniteDifferences) {
  for (const auto& [name, info] : loss_registry()) {
    auto loss = make_loss(name);
    const int64_t rows = 4, cols = 5;
    Tensor out = random_tensor({rows, cols}, 3, -2, 2);
    Tensor target;
    if (loss->classification()) {
      target = Tensor::empty({rows}, DType::i32);
      for (int64_t i = 0; i < rows; ++i) target.data<int32_t>()[i] = static_cast<int32_t>(i % cols);
    } else {
      target = random_tensor({rows, cols}, 4);
    }
    const float scale = 1.0f / rows;
    Tensor dout = Tensor::empty({rows, cols});
    loss->compute(out, target, &dout, scale);
    for (int64_t i = 0; i < out.numel(); ++i) {
      const double numeric = numeric_grad(out.data<float>()[i], [&] {
        return loss->compute(out, target, nullptr, scale).loss_sum * scale;
      });
      EXPECT_LT(rel_err(dout.data<float>()[i], numeric), kTol) << name << " [" << i << "]";
    }
  }
}

TEST(GradCheck, WholeModelMatchesFiniteDifferences) {
  Model model({"linear out=7", "layernorm", "gelu", "dropout p=0.2", "linear out=6", "tanh",
               "linear out=3"},
              "softmax_cross_entropy", {5});
  model.init_params(5);
  Tensor x = random_tensor({4, 5}, 6);
  Tensor y = Tensor::empty({4}, DType::i32);
  for (int i = 0; i < 4; ++i) y.data<int32_t>()[i] = i % 3;
  StepContext ctx{true, 11, 0, nullptr};
  auto loss = [&] {
    model.forward(x, ctx);
    return model.loss(y, 0.25f, false).loss_sum * 0.25;
  };
  model.zero_grads();
  model.forward(x, ctx);
  model.loss(y, 0.25f, true);
  std::vector<int64_t> ready;
  model.backward(ctx, [&](int64_t off) { ready.push_back(off); });
  ASSERT_EQ(ready.size(), 7u);
  EXPECT_TRUE(std::is_sorted(ready.rbegin(), ready.rend())) << "readiness moves towards offset 0";
  EXPECT_EQ(ready.back(), 0);
  Tensor& p = model.params();
  for (const ParamInfo& info : model.param_table())
    for (int64_t i = info.offset; i < info.offset + shape_numel(info.shape); ++i) {
      EXPECT_LT(rel_err(model.grads().data<float>()[i], numeric_grad(p.data<float>()[i], loss)),
                kTol)
          << info.name << " [" << i - info.offset << "]";
    }
}

// Weight tying: the output layer reads the embedding's token table, the table is stored once, and
// its gradient is the sum of both layers' contributions (checked against finite differences).
TEST(GradCheck, TiedEmbeddingAndOutputLayer) {
  const std::vector<std::string> layers = {"embedding vocab=6 dim=4", "layernorm",
                                           "linear out=6 bias=false tie=embedding"};
  Model tied(layers, "softmax_cross_entropy", {3});
  Model untied({"embedding vocab=6 dim=4", "layernorm", "linear out=6 bias=false"},
               "softmax_cross_entropy", {3});
  ASSERT_EQ(tied.param_table().size(), untied.param_table().size() - 1);
  EXPECT_LT(tied.num_params(), untied.num_params());
  // Values well above the difference step (the default init draws the table from N(0, 0.02)).
  const Tensor values = random_tensor({tied.num_params()}, 3, -0.8f, 0.8f);
  tied.params().copy_from(values);
  Tensor x = Tensor::empty({2, 3}, DType::i32), y = Tensor::empty({2, 3}, DType::i32);
  for (int i = 0; i < 6; ++i) x.data<int32_t>()[i] = (i * 5) % 6, y.data<int32_t>()[i] = i % 6;
  StepContext ctx{true, 1, 0, nullptr};
  auto loss = [&] {
    tied.forward(x, ctx);
    return tied.loss(y.reshape({6}), 1.0f / 6, false).loss_sum / 6;
  };
  tied.zero_grads();
  tied.forward(x, ctx);
  tied.loss(y.reshape({6}), 1.0f / 6, true);
  tied.backward(ctx, nullptr);
  Tensor& p = tied.params();
  const ParamInfo& table = tied.param_table()[0];
  ASSERT_EQ(table.name, "0.embedding.token");
  for (int64_t i = table.offset; i < table.offset + shape_numel(table.shape); ++i)
    EXPECT_LT(rel_err(tied.grads().data<float>()[i], numeric_grad(p.data<float>()[i], loss)), kTol)
        << "token table [" << i - table.offset << "]";
  // A tie with nothing to tie to, or to a table of the wrong shape, names the layer.
  EXPECT_THROW(Model({"linear out=6 tie=embedding"}, "mse", {4}), InputError);
  EXPECT_THROW(Model({"embedding vocab=6 dim=4", "linear out=5 tie=embedding"},
                     "softmax_cross_entropy", {3}),
               InputError);
  EXPECT_THROW(
      Model({"embedding vocab=6 dim=4", "linear out=6 tie=token"}, "softmax_cross_entropy", {3}),
      InputError);
}

TEST(Model, FlatBufferLayout) {
  Model model({"linear out=3", "relu", "layernorm", "linear out=2 bias=false"}, "mse", {5});
  const auto& t = model.param_table();
  ASSERT_EQ(t.size(), 5u);
  EXPECT_EQ(t[0].name, "0.linear.weight");
  EXPECT_EQ(t[4].name, "3.linear.weight");
  for (const auto& p : t) EXPECT_EQ(p.offset % 16, 0) << p.name << " is aligned";
  EXPECT_FALSE(t[1].decay);  // bias
  EXPECT_FALSE(t[2].decay);  // layernorm weight
  EXPECT_TRUE(t[4].decay);
  EXPECT_EQ(model.segments().size(), 5u);
}

TEST(Model, ConfigErrorsNameTheLayer) {
  auto message = [](std::vector<std::string> layers) {
    try {
      Model m(layers, "softmax_cross_entropy", {4});
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(
      message({"linear out=3", "conv9"}).find("model.layer 1 (conv9): unknown layer type 'conv9'"),
      std::string::npos);
  EXPECT_NE(message({"linear"}).find("missing argument out=N"), std::string::npos);
  EXPECT_NE(message({"linear out=3 widht=2"}).find("unknown argument 'widht'"), std::string::npos);
  EXPECT_NE(message({"dropout p=1.5"}).find("p must be in [0, 1)"), std::string::npos);
  EXPECT_NE(message({"linear out=abc"}).find("out=abc is not an integer"), std::string::npos);
}

}  // namespace
}  // namespace tern
