#include "tern/infer/export.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "tern/base/error.h"
#include "tern/io/hdf5_file.h"

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
      {"reference_profile",
       {{"inputs", profile_to_json(info.input_profile)},
        {"predictions", profile_to_json(info.prediction_profile)}}},
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
    if (auto ref = j.find("reference_profile"); ref != j.end() && ref->is_object()) {
      if (ref->contains("inputs"))
        info.input_profile = profile_from_json(ref->at("inputs"), where + " reference inputs");
      if (ref->contains("predictions"))
        info.prediction_profile =
            profile_from_json(ref->at("predictions"), where + " reference predictions");
    }
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
    for (const char* key : {"model_spec", "input_schema", "outputs", "normalization",
                            "feature_stats", "reference_profile", "lineage"})
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

ExportInfo read_export_info(const std::string& path) {
  h5::File f = h5::File::open(path);
  const std::string format = f.read_attr_string("/", "format");
  if (format != kFormat)
    throw InputError("'" + path + "': format '" + format + "', expected " + kFormat);
  nlohmann::json j;
  for (const char* key : {"model_spec", "input_schema", "outputs", "normalization", "feature_stats",
                          "reference_profile", "lineage"}) {
    if (std::string(key) == "reference_profile" && !f.has_attr("/", key)) continue;  // older
    try {
      j[key] = nlohmann::json::parse(f.read_attr_string("/", key));
    } catch (const nlohmann::json::exception& e) {
      throw InputError("'" + path + "': attribute " + key + " is not valid JSON: " + e.what());
    }
  }
  return export_info_from_json(j, "'" + path + "'");
}

void read_export_weights(const std::string& path, const std::vector<ParamInfo>& table,
                         Tensor& params) {
  h5::File f = h5::File::open(path);
  for (const ParamInfo& p : table) {
    const std::string ds = dataset_of(p.name);
    if (!f.exists(ds)) throw InputError("'" + path + "': dataset " + ds + " is missing");
    Tensor t = f.read(ds, DType::f32);
    if (t.shape() != p.shape)
      throw InputError("'" + path + "': dataset " + ds + " has shape " + shape_str(t.shape()) +
                       ", the model spec needs " + shape_str(p.shape));
    std::copy_n(t.data<float>(), t.numel(), params.data<float>() + p.offset);
  }
}

}  // namespace tern
