// Checkpoint benchmark: the training stall of an asynchronous save against one memcpy of the same
// state (the physical floor), the upload throughput of one large object, and the resume time.
//   tern_bench_checkpoint --uri URI [--state-mb 256] [--upload-mb 1024] [--upload-file F]
//                         [--repeats 5]
// Prints JSON lines; bench/checkpoint.sh runs it against a loopback S3 server next to boto3, with
// --upload-file naming the file of random bytes that boto3 then uploads too (the same bytes
// through both clients; read into memory before the timing, as a checkpoint's state is).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tern/base/clock.h"
#include "tern/base/log.h"
#include "tern/train/checkpoint.h"

using namespace tern;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void fill(Tensor& t, uint32_t seed) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>((i * 2654435761u + seed) % 1000) * 1e-3f;
}

}  // namespace

int main(int argc, char** argv) {
  std::string uri, upload_file;
  double state_mb = 256, upload_mb = 1024;
  int repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--uri")
      uri = v;
    else if (k == "--state-mb")
      state_mb = std::stod(v);
    else if (k == "--upload-mb")
      upload_mb = std::stod(v);
    else if (k == "--upload-file")
      upload_file = v;
    else if (k == "--repeats")
      repeats = std::stoi(v);
  }
  if (uri.empty()) {
    std::fprintf(
        stderr,
        "usage: tern_bench_checkpoint --uri URI [--state-mb N] [--upload-mb N] [--upload-file F] "
        "[--repeats N]\n");
    return 2;
  }
  init_logging(0, "warn");
  auto comm = make_single_communicator();

  // 1. Stall per asynchronous save vs memcpy of the state: three buffers like params, m, v.
  const int64_t per_buffer = static_cast<int64_t>(state_mb * (1 << 20) / 3 / sizeof(float));
  std::vector<StateBuffer> state;
  for (const char* name : {"params", "optim.m", "optim.v"}) {
    Tensor t = Tensor::empty({per_buffer});
    fill(t, static_cast<uint32_t>(state.size()));
    state.push_back({name, t});
  }
  const uint64_t state_bytes = 3 * per_buffer * sizeof(float);
  std::vector<ParamInfo> layout = {{"0.linear.weight", {per_buffer}, 0, true, Init::zeros, 1, 0}};
  CheckpointConfig cfg;
  cfg.uri = uri + "/stall";
  cfg.keep = 2;
  {
    CheckpointManager mgr(cfg, *comm, state, layout, "adamw", "bench");
    std::vector<char> dst(state_bytes);
    std::memset(dst.data(), 1, dst.size());
    std::vector<double> stalls, copies;
    mgr.save({0, 0, 0}, true);  // maps the snapshot buffer once, as the first save of a run does
    for (int r = 0; r < repeats; ++r) {
      stalls.push_back(mgr.save({r + 1, 0, 0}, false));
      mgr.wait();
      auto t0 = Clock::now();
      uint64_t off = 0;
      for (const auto& b : state) {
        std::memcpy(dst.data() + off, b.tensor.raw(), b.tensor.nbytes());
        off += b.tensor.nbytes();
      }
      copies.push_back(seconds_since(t0));
    }
    std::printf(
        "{\"bench\": \"stall\", \"state_mb\": %.0f, \"stall_ms\": %.2f, \"memcpy_ms\": %.2f, "
        "\"ratio\": %.2f}\n",
        state_bytes / 1048576.0, median(stalls) * 1e3, median(copies) * 1e3,
        median(stalls) / median(copies));
  }

  // 2. Upload throughput of one large object (multipart with parallel parts on S3): the bytes of
  // --upload-file, or random bytes (incompressible, like trained weights; never mostly zeros).
  auto store = open_store(uri);
  std::vector<char> big;
  if (!upload_file.empty()) {
    std::ifstream in(upload_file, std::ios::binary | std::ios::ate);
    big.resize(in ? static_cast<size_t>(in.tellg()) : 0);
    in.seekg(0);
    if (big.empty() || !in.read(big.data(), static_cast<std::streamsize>(big.size()))) {
      std::fprintf(stderr, "--upload-file %s: cannot read it, or it is empty\n",
                   upload_file.c_str());
      return 2;
    }
    upload_mb = big.size() / 1048576.0;
  } else {
    big.resize(static_cast<size_t>(upload_mb * (1 << 20)) / 8 * 8);
    std::mt19937_64 rng(42);
    for (size_t i = 0; i < big.size(); i += 8) {
      const uint64_t r = rng();
      std::memcpy(big.data() + i, &r, 8);
    }
  }
  {
    auto t0 = Clock::now();
    store->put("upload/object.bin", big.data(), big.size());
    const double s = seconds_since(t0);
    std::printf("{\"bench\": \"upload\", \"mb\": %.0f, \"seconds\": %.3f, \"mb_per_s\": %.1f}\n",
                upload_mb, s, upload_mb / s);
    store->remove("upload/object.bin");
  }
  big.clear();
  big.shrink_to_fit();

  // 3. Resume (find, verify, load) of a checkpoint of upload_mb.
  const int64_t resume_elems = static_cast<int64_t>(upload_mb * (1 << 20) / sizeof(float));
  std::vector<StateBuffer> resume_state = {{"params", Tensor::empty({resume_elems})}};
  fill(resume_state[0].tensor, 7);
  std::vector<ParamInfo> resume_layout = {
      {"0.linear.weight", {resume_elems}, 0, true, Init::zeros, 1, 0}};
  cfg.uri = uri + "/resume";
  {
    CheckpointManager writer(cfg, *comm, resume_state, resume_layout, "adamw", "bench");
    writer.save({100, 0, 0}, true);
  }
  resume_state[0].tensor.zero_();
  CheckpointManager reader(cfg, *comm, resume_state, resume_layout, "adamw", "bench");
  auto t0 = Clock::now();
  auto pos = reader.resume();
  const double s = seconds_since(t0);
  std::printf(
      "{\"bench\": \"resume\", \"mb\": %.0f, \"seconds\": %.3f, \"mb_per_s\": %.1f, \"step\": "
      "%lld}\n",
      upload_mb, s, upload_mb / s, static_cast<long long>(pos ? pos->step : -1));
  return pos && pos->step == 100 ? 0 : 1;
}
