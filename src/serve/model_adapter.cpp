// From an exported model.h5 to what the repository serves: its schema as the protocol sees it
// and one predict function per worker, each with its own copy of the model.
#include "tern/serve/model_adapter.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "tern/base/error.h"
#include "tern/infer/inference_model.h"

namespace tern::serve {
namespace {

// At most this many rows of zeros warm each worker up: enough to size its buffers for the
// batches it will see, without a huge allocation for a generous max_batch_size.
constexpr int64_t kMaxWarmupRows = 4096;

// Token models: whether the logits at a position depend on later tokens (they must not, for
// right-padding to leave them unchanged). Rows that share a prefix of k tokens and differ after
// it must agree on the logits of the first k positions, for up to 16 values of k.
bool looks_causal(InferenceModel& m, int64_t context, int64_t vocab, int64_t width) {
  if (context < 2 || vocab < 2) return true;
  const int64_t cuts = std::min<int64_t>(context - 1, 16);
  const int64_t rows = cuts + 1;
  std::vector<int32_t> ids(static_cast<size_t>(rows * context));
  std::vector<int64_t> cut(static_cast<size_t>(rows), context);
  for (int64_t p = 0; p < context; ++p) ids[p] = static_cast<int32_t>((p * 7 + 3) % vocab);
  for (int64_t r = 1; r < rows; ++r) {
    cut[r] = 1 + (r - 1) * (context - 2) / std::max<int64_t>(cuts - 1, 1);
    for (int64_t p = 0; p < context; ++p)
      ids[r * context + p] = p < cut[r] ? ids[p] : static_cast<int32_t>((ids[p] + r) % vocab);
  }
  std::vector<float> logits(static_cast<size_t>(rows * context * width));
  m.predict_tokens(ids.data(), rows, logits.data());
  for (int64_t r = 1; r < rows; ++r)
    for (int64_t i = 0; i < cut[r] * width; ++i) {
      const float a = logits[i], b = logits[r * context * width + i];
      if (!(std::fabs(a - b) <= 1e-4f * (1.0f + std::fabs(a)))) return false;
    }
  return true;
}

// Runs a token model on the protocol's rows: INT32 ids right-padded with kTokenPad. One per
// worker (its buffers are not shared).
struct TokenRunner {
  std::shared_ptr<InferenceModel> model;
  int64_t context = 0;
  bool last_position = false;  // a language model: the logits at each row's last token
  std::vector<int32_t> ids;
  std::vector<int64_t> lengths;

  void operator()(const int32_t* x, int64_t rows, float* out) {
    ids.resize(static_cast<size_t>(rows * context));
    lengths.assign(static_cast<size_t>(rows), context);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t p = 0; p < context; ++p) {
        const int32_t v = x[r * context + p];
        if (v == kTokenPad && lengths[r] == context) lengths[r] = p;
        // Padding becomes id 0: any valid id does, as later positions are not seen.
        ids[r * context + p] = v == kTokenPad ? 0 : v;
      }
    if (last_position)
      model->predict_last(ids.data(), lengths.data(), rows, out);
    else
      model->predict_tokens(ids.data(), rows, out);
  }
};

}  // namespace

LoadedModel load_export(const std::string& path, int64_t instances, int64_t warmup_rows) {
  std::unique_ptr<InferenceModel> first = InferenceModel::load(path);
  const ExportInfo& info = first->info();
  LoadedModel out;
  out.schema.input_name = info.input_name;
  out.schema.input_shape = info.input_shape;
  out.schema.output_name = info.output_name;
  out.schema.output_features = first->output_features();
  out.schema.labels = info.labels;
  out.schema.input_datatype = info.input_datatype;
  for (const auto& c : info.input_profile.columns) out.schema.feature_names.push_back(c.name);
  out.reference.feature_stats = info.feature_stats;
  out.reference.inputs = info.input_profile;
  out.reference.predictions = info.prediction_profile;
  out.reference.classification = first->classification();
  out.reference.weight_bytes = first->parameter_bytes();
  ModelSchema& s = out.schema;
  if (s.input_datatype != "FP32" && s.input_datatype != "INT32")
    throw InputError("input datatype '" + s.input_datatype +
                     "': tern-serve serves FP32 features or INT32 token ids");
  bool last_position = false;
  if (s.tokens()) {
    // A language model: [T] token ids in, [T, vocab] logits out, served as the logits of the
    // next token after each row's last one ([vocab] per row) for rows of 1 to T ids. Another
    // token model (a sequence classifier) takes exactly T ids and answers its whole output.
    s.vocab = first->vocab_size();
    if (s.input_shape.size() != 1 || s.vocab < 1)
      throw InputError("INT32 input " + shape_str(s.input_shape) +
                       ": a token model takes [positions] ids into an embedding layer");
    const int64_t context = s.input_shape[0];
    const Shape& os = first->output_shape();
    last_position = os.size() == 2 && os[0] == context;
    s.min_tokens = context;
    if (last_position) {
      s.output_features = os[1];
      if (looks_causal(*first, context, s.vocab, os[1])) {
        s.min_tokens = 1;
      } else {
        spdlog::warn(
            "'{}': the logits at a position depend on later tokens (not a causal "
            "model): requests must carry exactly {} tokens per row",
            path, context);
      }
    }
  }
  if (s.input_name.empty() || s.output_name.empty() || s.input_name == s.output_name)
    throw InputError("input name '" + s.input_name + "' and output name '" + s.output_name +
                     "' must be non-empty and differ");
  if (s.input_features() < 1 || s.output_features < 1)
    throw InputError("input shape " + shape_str(s.input_shape) + " and " +
                     std::to_string(s.output_features) + " outputs: both need elements");
  if (!s.labels.empty() && static_cast<int64_t>(s.labels.size()) != s.output_features)
    throw InputError(std::to_string(s.labels.size()) + " labels for " +
                     std::to_string(s.output_features) + " outputs");

  std::vector<std::shared_ptr<InferenceModel>> models;
  models.push_back(std::move(first));
  for (int64_t i = 1; i < instances; ++i) models.push_back(models.front()->clone());
  const int64_t rows = std::clamp<int64_t>(warmup_rows, 1, kMaxWarmupRows);
  // Zeros: features of 0, or rows of token 0 as long as the context.
  InputRows zeros;
  (s.tokens() ? zeros.tokens.resize(static_cast<size_t>(rows * s.input_features()))
              : zeros.features.resize(static_cast<size_t>(rows * s.input_features())));
  std::vector<float> result(static_cast<size_t>(rows * s.output_features));
  for (auto& m : models) {
    PredictFn predict;
    if (s.tokens()) {
      auto runner = std::make_shared<TokenRunner>();
      runner->model = m;
      runner->context = s.input_features();
      runner->last_position = last_position;
      predict = [runner](const InputRows& x, int64_t n, float* y) {
        (*runner)(x.tokens.data(), n, y);
      };
    } else {
      predict = [m](const InputRows& x, int64_t n, float* y) {
        m->predict(x.features.data(), n, y);
      };
    }
    predict(zeros, rows, result.data());
    for (float v : result)
      if (!std::isfinite(v))
        throw InputError("warm-up inference on zeros gives non-finite outputs (" +
                         std::to_string(v) + ")");
    out.instances.push_back(std::move(predict));
  }
  return out;
}

}  // namespace tern::serve
