#pragma once
// The model adapter: an exported model made ready for the repository and the batcher.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tern/serve/monitoring.h"
#include "tern/serve/protocol.h"
#include "tern/serve/scheduler.h"

namespace tern::serve {

// A model file made ready to run: its schema and one predict function per worker.
struct LoadedModel {
  ModelSchema schema;
  std::vector<PredictFn> instances;
  ModelReference reference;  // what it knows of its training data, for monitoring
};
// Opens the file at `path`, checks it and warms up `instances` copies on `warmup_rows` rows of
// zeros; throws naming what is wrong.
using ModelLoader =
    std::function<LoadedModel(const std::string& path, int64_t instances, int64_t warmup_rows)>;
// The default loader: an exported model.h5 through InferenceModel.
LoadedModel load_export(const std::string& path, int64_t instances, int64_t warmup_rows);

}  // namespace tern::serve
