#include <gtest/gtest.h>

#include <cmath>

#include "tern/nn/optim.h"
#include "test_util.h"

namespace tern {
namespace {

TEST(Schedule, WarmupThenCosineToFloor) {
  OptimConfig c;
  c.lr = 1.0f;
  c.warmup_steps = 10;
  c.min_lr_ratio = 0.1f;
  EXPECT_FLOAT_EQ(learning_rate(c, 0, 110), 0.1f);
  EXPECT_FLOAT_EQ(learning_rate(c, 9, 110), 1.0f);
  EXPECT_FLOAT_EQ(learning_rate(c, 10, 110), 1.0f);
  EXPECT_NEAR(learning_rate(c, 109, 110), 0.1f, 1e-6);
  EXPECT_NEAR(learning_rate(c, 10 + 99 / 2, 110), 0.55f, 0.02f);
  c.schedule = "linear";
  EXPECT_NEAR(learning_rate(c, 109, 110), 0.1f, 1e-6);
  c.schedule = "constant";
  EXPECT_FLOAT_EQ(learning_rate(c, 100, 110), 1.0f);
}

TEST(Optimizer, ClipsTheGlobalNorm) {
  Model model({"linear out=2"}, "mse", {3});
  model.init_params(1);
  OptimConfig c;
  c.name = "sgd";
  c.momentum = 0;
  c.weight_decay = 0;
  c.lr = 1.0f;
  c.schedule = "constant";
  c.clip_norm = 0.5f;
  Optimizer opt(c, 10, model.num_params());
  Tensor before = testing::copy_of(model.params());
  for (const ParamInfo& info : model.param_table())
    for (int64_t i = 0; i < shape_numel(info.shape); ++i)
      model.grads().data<float>()[info.offset + i] = 1.0f;
  Optimizer::StepStats s = opt.step(model, 0);
  double moved = 0;
  for (int64_t i = 0; i < before.numel(); ++i) {
    double d = before.data<float>()[i] - model.params().data<float>()[i];
    moved += d * d;
  }
  EXPECT_GT(s.grad_norm, 0.5);
  EXPECT_NEAR(std::sqrt(moved), 0.5, 1e-5) << "the update has the clipped norm";
}

}  // namespace
}  // namespace tern
