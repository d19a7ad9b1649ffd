// tern-ckpt: lists, verifies, exports and compares the checkpoints in a store.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>

#include <boost/program_options.hpp>

#include "tern/base/error.h"
#include "tern/base/log.h"
#include "tern/base/version.h"
#include "tern/infer/export.h"
#include "tern/io/hdf5_file.h"
#include "tern/train/checkpoint.h"
#include "tool_main.h"

namespace po = boost::program_options;
using namespace tern;

namespace {

const char* kUsage = R"(Usage: tern-ckpt <command> [options]

Commands:
  list URI                       checkpoints in a store: step, time, size, complete or not
  verify URI [--step N]          read one checkpoint and check every shard's size and checksum
  export URI [--step N] --output model.h5
                                 write a checkpoint as an exported model (what tern-serve loads)
  compare URI_A URI_B            relative distance between the parameters of two checkpoints

URI is a checkpoint.uri (a path, file://PATH or s3://BUCKET/PREFIX), or the URI of one
checkpoint folder (.../ckpt/step-NNNNNNNN). Without --step the newest complete checkpoint is used.
)";

struct Target {
  std::unique_ptr<ObjectStore> store;
  int64_t step = -1;
};

Target open_target(const std::string& uri, int64_t step) {
  Target t;
  const auto pos = uri.rfind("/ckpt/step-");
  long long named = -1;
  if (pos != std::string::npos && std::sscanf(uri.c_str() + pos, "/ckpt/step-%lld", &named) == 1) {
    t.store = open_store(uri.substr(0, pos));
    t.step = named;
  } else {
    t.store = open_store(uri);
    t.step = step;
  }
  if (t.step < 0) {
    for (const auto& l : list_checkpoints(*t.store))
      if (l.complete) t.step = l.step;
    if (t.step < 0) throw InputError("no complete checkpoint in " + t.store->uri());
  }
  return t;
}

std::string when(int64_t unix_seconds) {
  char buf[32];
  std::time_t t = unix_seconds;
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
  return buf;
}

int list(const std::vector<std::string>& args) {
  if (args.size() != 1) throw InputError("list takes one URI");
  auto store = open_store(args[0]);
  auto all = list_checkpoints(*store);
  std::printf("%s\n%10s  %-19s  %12s  %s\n", store->uri().c_str(), "step", "time (UTC)", "bytes",
              "state");
  for (const auto& l : all)
    std::printf("%10lld  %-19s  %12llu  %s\n", static_cast<long long>(l.step),
                when(l.mtime).c_str(), static_cast<unsigned long long>(l.bytes),
                l.complete ? "complete" : "incomplete (no manifest)");
  if (all.empty()) std::printf("(no checkpoints)\n");
  return kExitOk;
}

// Parameters of a checkpoint: the "params" buffer of its flat state.
std::pair<Manifest, std::vector<float>> load_params(const Target& t) {
  std::string state;
  Manifest m = read_checkpoint(*t.store, t.step, &state);
  if (m.buffers.empty() || m.buffers[0].first != "params")
    throw InputError(t.store->uri() + "/" + checkpoint_folder(t.step) + ": no params buffer");
  std::vector<float> params(m.buffers[0].second / sizeof(float));
  std::memcpy(params.data(), state.data(), m.buffers[0].second);
  return {m, params};
}

int verify(const std::vector<std::string>& args, int64_t step) {
  if (args.size() != 1) throw InputError("verify takes one URI");
  Target t = open_target(args[0], step);
  std::string state;
  try {
    Manifest m = read_checkpoint(*t.store, t.step, &state);
    std::printf("%s/%s: OK (step %lld, %zu shard(s) from %d rank(s), %llu bytes, written by %s)\n",
                t.store->uri().c_str(), checkpoint_folder(t.step).c_str(),
                static_cast<long long>(t.step), m.shards.size(), m.world_size,
                static_cast<unsigned long long>(m.state_bytes), m.code_version.c_str());
    return kExitOk;
  } catch (const StoreError& e) {
    std::printf("%s/%s: BAD: %s\n", t.store->uri().c_str(), checkpoint_folder(t.step).c_str(),
                e.what());
    return kExitError;
  }
}

int export_model(const std::vector<std::string>& args, int64_t step, const std::string& output) {
  if (args.size() != 1) throw InputError("export takes one URI");
  if (output.empty()) throw InputError("export needs --output FILE.h5");
  Target t = open_target(args[0], step);
  auto [m, params] = load_params(t);
  const std::string where = t.store->uri() + "/" + checkpoint_folder(t.step);
  if (m.model.empty()) throw InputError(where + ": the manifest does not describe the model");
  ExportInfo info = export_info_from_json(m.model, where);
  info.lineage["step"] = m.position.step;
  info.lineage["checkpoint"] = where;
  info.lineage["metrics"] = {{"train_loss", m.position.train_loss}};
  Tensor flat = Tensor::wrap(params.data(), {static_cast<int64_t>(params.size())}, DType::f32);
  write_export(output, info, m.tensors, flat);
  std::printf("%s (step %lld) -> %s\n", where.c_str(), static_cast<long long>(m.position.step),
              output.c_str());
  return kExitOk;
}

int compare(const std::vector<std::string>& args) {
  if (args.size() != 2) throw InputError("compare takes two URIs");
  auto [ma, a] = load_params(open_target(args[0], -1));
  auto [mb, b] = load_params(open_target(args[1], -1));
  if (a.size() != b.size()) throw InputError("the checkpoints have different parameter counts");
  double diff = 0, norm = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff += d * d;
    norm += static_cast<double>(b[i]) * b[i];
    worst = std::max(worst, std::abs(d));
  }
  std::printf("step %lld vs step %lld: relative distance %.3g, max abs difference %.3g\n",
              static_cast<long long>(ma.position.step), static_cast<long long>(mb.position.step),
              std::sqrt(diff / std::max(norm, 1e-300)), worst);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  init_logging(0, "warn");
  return run_subcommand(
      argc, argv, "tern-ckpt", kUsage, [&](const std::string& cmd) -> std::optional<int> {
        std::vector<std::string> positional;
        int64_t step = -1;
        std::string output;
        po::options_description desc("options");
        desc.add_options()("step", po::value(&step), "checkpoint step")(
            "output", po::value(&output), "output file")("args", po::value(&positional));
        po::positional_options_description pos;
        pos.add("args", -1);
        po::variables_map vm;
        po::store(po::command_line_parser(argc - 1, argv + 1).options(desc).positional(pos).run(),
                  vm);
        po::notify(vm);
        if (cmd == "list") return list(positional);
        if (cmd == "verify") return verify(positional, step);
        if (cmd == "export") return export_model(positional, step, output);
        if (cmd == "compare") return compare(positional);
        return std::nullopt;
      });
}
