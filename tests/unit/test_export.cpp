#include <gtest/gtest.h>

#include "tern/base/error.h"
#include "tern/infer/export.h"
#include "tern/infer/inference_model.h"
#include "tern/io/hdf5_file.h"
#include "test_util.h"

namespace tern {
namespace {

struct Exported {
  ExportInfo info;
  std::unique_ptr<Model> model;
  std::string path;
};

Exported make_export(const std::string& name) {
  Exported e;
  e.info.layers = {"linear out=8", "layernorm", "gelu", "dropout p=0.3", "linear out=3"};
  e.info.loss = "softmax_cross_entropy";
  e.info.input_shape = {5};
  e.info.output_name = "logits";
  e.info.labels = {"a", "b", "c"};
  e.info.normalization = "standard";
  e.info.norm.mean = {1, 2, 3, 4, 5};
  e.info.norm.stddev = {1, 0.5, 2, 0, 4};  // a zero std is left unscaled
  e.info.feature_stats = e.info.norm;
  e.info.lineage = {{"step", 42}};
  e.model = std::make_unique<Model>(e.info.layers, e.info.loss, e.info.input_shape);
  e.model->init_params(3);
  e.path = testing::temp_path(name);
  write_export(e.path, e.info, e.model->param_table(), e.model->params());
  return e;
}

TEST(Export, PredictMatchesTheTrainingModel) {
  Exported e = make_export("model.h5");
  auto m = InferenceModel::load(e.path);
  EXPECT_EQ(m->info().labels, e.info.labels);
  EXPECT_EQ(m->info().lineage["step"], 42);
  EXPECT_EQ(m->input_features(), 5);
  EXPECT_EQ(m->output_features(), 3);
  Tensor x = testing::random_tensor({4, 5}, 9, -3, 3);
  std::vector<float> out(12);
  m->predict(x.data<float>(), 4, out.data());

  Tensor xn = testing::copy_of(x);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 5; ++c) {
      const double sd = e.info.norm.stddev[c] > 0 ? e.info.norm.stddev[c] : 1.0;
      xn.data<float>()[r * 5 + c] =
          static_cast<float>((x.data<float>()[r * 5 + c] - e.info.norm.mean[c]) / sd);
    }
  const Tensor& ref = e.model->forward(xn, StepContext{false, 0, 0, nullptr});
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(out[i], ref.data<float>()[i], 1e-5) << i;

  auto copy = m->clone();
  std::vector<float> out2(12);
  copy->predict(x.data<float>(), 4, out2.data());
  EXPECT_EQ(out, out2);
}

TEST(Export, ReadableLayout) {
  Exported e = make_export("layout.h5");
  h5::File f = h5::File::open(e.path);
  EXPECT_EQ(f.info("/layers/0.linear/weight").dims, (Shape{8, 5}));
  EXPECT_EQ(f.info("/layers/1.layernorm/bias").dims, (Shape{8}));
  EXPECT_EQ(f.read_attr_string("/", "format"), "tern-model/1");
  EXPECT_NE(f.read_attr_string("/", "input_schema").find("\"input\""), std::string::npos);
}

TEST(Export, BrokenFilesAreNamed) {
  Exported e = make_export("broken.h5");
  Model other({"linear out=9", "linear out=3"}, "softmax_cross_entropy", {5});
  // The same description with weights of another shape.
  write_export(e.path, e.info, other.param_table(), other.params());
  try {
    InferenceModel::load(e.path);
    FAIL() << "loaded a model whose weights do not fit its spec";
  } catch (const InputError& err) {
    EXPECT_NE(std::string(err.what()).find("/layers/0.linear/weight has shape [9, 5]"),
              std::string::npos)
        << err.what();
  }
  EXPECT_THROW(InferenceModel::load(testing::temp_path("absent.h5")), InputError);
}

}  // namespace
}  // namespace tern
