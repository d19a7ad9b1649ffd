#include "tern/export.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "tern/error.h"
#include "tern/h5.h"

namespace tern {
namespace {

constexpr const char* kFormat = "tern-model/1";

// "0.linear.weight" -> "/layers/0.linear/weight"
std::string dataset_of(const std::string& param_name) {
  const auto dot = param_name.rfind('.');
  return "/layers/" + param_name.substr(0, dot) + "/" + param_name.substr(dot + 1);
}

nlohmann::json stats_json(const FeatureStats& s) {
  return {{"mean", s.mean}, {"std", s.stddev}, {"min", s.min}, {"max", s.max}};
}

FeatureStats stats_from(const nlohmann::json& j) {
  FeatureStats s;
  s.mean = j.value("mean", std::vector<double>{});
  s.stddev = j.value("std", std::vector<double>{});
  s.min = j.value("min", std::vector<double>{});
  s.max = j.value("max", std::vector<double>{});
  return s;
}

}  // namespace

nlohmann::json export_info_to_json(const ExportInfo& info) {
  return {
      {"model_spec", {{"layers", info.layers}, {"loss", info.loss}}},
      {"input_schema",
       {{"name", info.input_name}, {"shape", info.input_shape}, {"datatype", info.input_datatype}}},
      {"outputs",
       nlohmann::json::array(
           {{{"name", info.output_name}, {"datatype", "FP32"}, {"labels", info.labels}}})},
      {"normalization",
       {{"kind", info.normalization}, {"mean", info.norm.mean}, {"std", info.norm.stddev}}},
      {"feature_stats", stats_json(info.feature_stats)},
      {"lineage", info.lineage}};
}

ExportInfo export_info_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    ExportInfo info;
    info.layers = j.at("model_spec").at("layers").get<std::vector<std::string>>();
    info.loss = j.at("model_spec").at("loss").get<std::string>();
    info.input_name = j.at("input_schema").at("name").get<std::string>();
    info.input_shape = j.at("input_schema").at("shape").get<Shape>();
    info.input_datatype = j.at("input_schema").value("datatype", std::string("FP32"));
    const auto& out = j.at("outputs").at(0);
    info.output_name = out.at("name").get<std::string>();
    info.labels = out.value("labels", std::vector<std::string>{});
    info.normalization = j.at("normalization").at("kind").get<std::string>();
    info.norm.mean = j.at("normalization").value("mean", std::vector<double>{});
    info.norm.stddev = j.at("normalization").value("std", std::vector<double>{});
    info.feature_stats = stats_from(j.value("feature_stats", nlohmann::json::object()));
    info.lineage = j.value("lineage", nlohmann::json::object());
    return info;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": malformed model description: " + e.what());
  }
}

void write_export(const std::string& path, const ExportInfo& info,
                  const std::vector<ParamInfo>& table, const Tensor& params) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  try {
    h5::File f = h5::File::create(tmp);
    for (const ParamInfo& p : table) f.write(dataset_of(p.name), params.slice(p.offset, p.shape));
    const nlohmann::json j = export_info_to_json(info);
    f.write_attr("/", "format", std::string(kFormat));
    for (const char* key :
         {"model_spec", "input_schema", "outputs", "normalization", "feature_stats", "lineage"})
      f.write_attr("/", key, j.at(key).dump());
  } catch (...) {
    std::filesystem::remove(tmp, ec);  // no half-written file left behind
    throw;
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error("cannot write '" + path + "': " + ec.message());
  }
}

std::unique_ptr<InferenceModel> InferenceModel::load(const std::string& path, Device dev) {
  h5::File f = h5::File::open(path);
  const std::string format = f.read_attr_string("/", "format");
  if (format != kFormat)
    throw InputError("'" + path + "': format '" + format + "', expected " + kFormat);
  nlohmann::json j;
  for (const char* key :
       {"model_spec", "input_schema", "outputs", "normalization", "feature_stats", "lineage"}) {
    try {
      j[key] = nlohmann::json::parse(f.read_attr_string("/", key));
    } catch (const nlohmann::json::exception& e) {
      throw InputError("'" + path + "': attribute " + key + " is not valid JSON: " + e.what());
    }
  }
  auto m = std::unique_ptr<InferenceModel>(new InferenceModel());
  m->info_ = export_info_from_json(j, "'" + path + "'");
  m->model_ = std::make_unique<Model>(m->info_.layers, m->info_.loss, m->info_.input_shape, dev);
  // Read into host memory, then copied to where the model runs.
  Tensor host = Tensor::zeros({m->model_->num_params()});
  for (const ParamInfo& p : m->model_->param_table()) {
    const std::string ds = dataset_of(p.name);
    if (!f.exists(ds)) throw InputError("'" + path + "': dataset " + ds + " is missing");
    Tensor t = f.read(ds, DType::f32);
    if (t.shape() != p.shape)
      throw InputError("'" + path + "': dataset " + ds + " has shape " + shape_str(t.shape()) +
                       ", the model spec needs " + shape_str(p.shape));
    std::copy_n(t.data<float>(), t.numel(), host.data<float>() + p.offset);
  }
  m->model_->params().copy_from(host);
  const int64_t features = m->input_features();
  if (m->info_.normalization == "standard") {
    if (static_cast<int64_t>(m->info_.norm.mean.size()) != features ||
        static_cast<int64_t>(m->info_.norm.stddev.size()) != features)
      throw InputError("'" + path + "': normalization has " +
                       std::to_string(m->info_.norm.mean.size()) + " means for " +
                       std::to_string(features) + " features");
    for (int64_t i = 0; i < features; ++i) {
      m->mean_.push_back(static_cast<float>(m->info_.norm.mean[i]));
      const double sd = m->info_.norm.stddev[i];
      m->inv_std_.push_back(sd > 1e-12 ? static_cast<float>(1.0 / sd) : 1.0f);
    }
  } else if (m->info_.normalization != "none") {
    throw InputError("'" + path + "': unknown normalization '" + m->info_.normalization + "'");
  }
  return m;
}

std::unique_ptr<InferenceModel> InferenceModel::clone() const {
  auto m = std::unique_ptr<InferenceModel>(new InferenceModel());
  m->info_ = info_;
  m->model_ =
      std::make_unique<Model>(info_.layers, info_.loss, info_.input_shape, model_->device());
  m->model_->params().copy_from(model_->params());
  m->mean_ = mean_;
  m->inv_std_ = inv_std_;
  return m;
}

int64_t InferenceModel::vocab_size() const {
  const auto& table = model_->param_table();
  if (model_->num_layers() < 1 || std::string(model_->layer(0).type()) != "embedding" ||
      table.empty() || table.front().layer != 0 || table.front().shape.size() != 2)
    return 0;
  return table.front().shape[0];  // "0.embedding.token": [vocab, dim]
}

Tensor InferenceModel::forward_tokens(const int32_t* ids, int64_t rows) {
  if (info_.input_datatype != "INT32")
    throw InputError("this model takes " + info_.input_datatype + " features, not token ids");
  Shape shape = info_.input_shape;
  shape.insert(shape.begin(), rows);
  Tensor x = Tensor::empty(shape, DType::i32);
  std::copy_n(ids, x.numel(), x.data<int32_t>());
  // On a GPU the ids go up and the logits come back (to() is a view when already on the host).
  return model_->forward(x.to(model_->device()), StepContext{false, 0, 0, nullptr}).to(Device{});
}

void InferenceModel::predict_tokens(const int32_t* ids, int64_t rows, float* out) {
  const Tensor y = forward_tokens(ids, rows);
  std::copy_n(y.data<float>(), y.numel(), out);
}

void InferenceModel::predict_last(const int32_t* ids, const int64_t* lengths, int64_t rows,
                                  float* out) {
  const Shape& os = model_->output_shape();
  if (info_.input_shape.size() != 1 || os.size() != 2 || os[0] != info_.input_shape[0])
    throw InputError("output " + shape_str(os) + " is not one row of logits per position of " +
                     shape_str(info_.input_shape));
  const int64_t positions = os[0], vocab = os[1];
  for (int64_t r = 0; r < rows; ++r)
    if (lengths[r] < 1 || lengths[r] > positions)
      throw InputError("row " + std::to_string(r) + ": length " + std::to_string(lengths[r]) +
                       " is outside [1, " + std::to_string(positions) + "]");
  const Tensor logits = forward_tokens(ids, rows);
  const float* y = logits.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(y + (r * positions + lengths[r] - 1) * vocab, vocab, out + r * vocab);
}

void InferenceModel::predict(const float* x, int64_t rows, float* out) {
  const int64_t f = input_features();
  Shape shape = info_.input_shape;
  shape.insert(shape.begin(), rows);
  if (input_.numel() < rows * f) input_ = Tensor::empty({rows * f});
  float* in = input_.data<float>();
  if (mean_.empty()) {
    std::copy_n(x, rows * f, in);
  } else {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < f; ++c) in[r * f + c] = (x[r * f + c] - mean_[c]) * inv_std_[c];
  }
  const Tensor y =
      model_
          ->forward(input_.slice(0, shape).to(model_->device()), StepContext{false, 0, 0, nullptr})
          .to(Device{});
  std::copy_n(y.data<float>(), y.numel(), out);
}

}  // namespace tern
