// Attention kernel benchmark: tern's fused causal attention (ops::attention_forward /
// attention_backward, cuda/attention.cu) alone on one GPU, for bench/gpu_attention.sh, which
// runs bench/torch_attention.py (PyTorch's flash attention) on the same shapes beside it.
//
//   tern_bench_attention [--cases 8x256,8x1024,64x256] [--heads 6] [--head-dim 64]
//                        [--dtype bf16|f32] [--seconds 0.05] [--reps 7] [--no-check]
//
// A case BxT is batch B, context T: qkv [B, T, 3C] (C = heads x head-dim, q, k and v side by side
// as tern's qkv projection writes them), out and dout [B, T, C], lse [B, heads, T] f32, dqkv
// [B, T, 3C]; inputs normal(0, 1) rounded to the dtype, made once on the host. For each case and
// each of forward, backward (out and lse from a forward before it) and forward + backward: a
// warm-up (10 calls and a probe of 5), then `reps` timed loops of back-to-back calls, each loop
// sized to about --seconds, timed by a std::chrono clock with device_synchronize before and after
// (so host launch costs count where the host is the slower side, as in a training step). Per call:
// the median over the loops; host_ms is the time the host took to queue the calls (near the
// total: the host, not the GPU, sets the pace). TFLOP/s: causal forward = 2 x 2 x B x H x T^2 x D
// / 2 (q k^T and p v, half the matrix), backward = 2.5 x forward (five matrix products of which
// one recomputes), forward + backward = 3.5 x forward: the figures flash attention's papers use.
// --check (default) compares the GPU forward of the first sample against the CPU reference on the
// same rounded inputs: max_abs_err. Prints one JSON line per case. --device cpu (with --dtype f32)
// runs the same on the CPU backend: a smoke test of this program on machines without a GPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tern/compute/device.h"
#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"

using namespace tern;

namespace {

using Clock = std::chrono::steady_clock;

struct Timing {
  double ms = 0, host_ms = 0;  // per call: total (synchronised) and the host's queueing
  int iters = 0;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// One loop of `iters` calls between two synchronisations: {seconds per call, host seconds per
// call}.
std::pair<double, double> loop(const std::function<void()>& fn, int iters, Device dev) {
  device_synchronize(dev);
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) fn();
  const double host = seconds_since(t0);
  device_synchronize(dev);
  return {seconds_since(t0) / iters, host / iters};
}

Timing time_calls(const std::function<void()>& fn, Device dev, double target_s, int reps) {
  for (int i = 0; i < 10; ++i) fn();
  const double probe = loop(fn, 5, dev).first;
  Timing t;
  t.iters = static_cast<int>(std::clamp(target_s / std::max(probe, 1e-7), 5.0, 20000.0));
  std::vector<double> ms, host;
  for (int r = 0; r < reps; ++r) {
    auto [per, h] = loop(fn, t.iters, dev);
    ms.push_back(per * 1e3);
    host.push_back(h * 1e3);
  }
  t.ms = median(ms);
  t.host_ms = median(host);
  return t;
}

// A host tensor of normal(0, 1) values rounded to dt, as f32 (for the CPU reference) and in dt.
std::pair<Tensor, Tensor> random_input(const Shape& shape, DType dt, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor f = Tensor::empty(shape);
  float* p = f.data<float>();
  for (int64_t i = 0; i < f.numel(); ++i) p[i] = normal(rng);
  if (dt == DType::f32) return {f, f};
  Tensor low = Tensor::empty(shape, dt);
  ops::convert(f, low);
  ops::convert(low, f);  // f = the rounded values
  return {f, low};
}

std::vector<std::pair<int64_t, int64_t>> parse_cases(const std::string& s) {
  std::vector<std::pair<int64_t, int64_t>> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto x = item.find('x');
    if (x == std::string::npos) throw std::invalid_argument("case '" + item + "' is not BxT");
    out.emplace_back(std::stoll(item.substr(0, x)), std::stoll(item.substr(x + 1)));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string cases = "8x256,8x1024,64x256", dtype = "bf16", device_kind = "cuda";
  int64_t heads = 6, head_dim = 64;
  double target_s = 0.05;
  int reps = 7;
  bool check = true;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(k + " needs a value");
      return argv[++i];
    };
    if (k == "--cases")
      cases = value();
    else if (k == "--heads")
      heads = std::stoll(value());
    else if (k == "--head-dim")
      head_dim = std::stoll(value());
    else if (k == "--dtype")
      dtype = value();
    else if (k == "--seconds")
      target_s = std::stod(value());
    else if (k == "--reps")
      reps = std::stoi(value());
    else if (k == "--device")
      device_kind = value();
    else if (k == "--no-check")
      check = false;
    else {
      std::fprintf(stderr,
                   "usage: tern_bench_attention [--cases 8x256,8x1024,64x256] [--heads 6] "
                   "[--head-dim 64] [--dtype bf16|f32] [--seconds 0.05] [--reps 7] [--no-check]\n");
      return 2;
    }
  }
  if (dtype != "bf16" && dtype != "f32") throw std::invalid_argument("--dtype is bf16 or f32");
  const DType dt = dtype == "bf16" ? DType::bf16 : DType::f32;
  Device dev;  // the CPU with --device cpu
  std::string device = "cpu";
  if (device_kind == "cuda") {
    if (cuda_device_count() < 1) {
      std::fprintf(stderr, "tern_bench_attention: no CUDA GPU (cuda_built: %d)\n", cuda_built());
      return 1;
    }
    dev = use_cuda_device(0);
    device = cuda_device_description();
  } else if (device_kind != "cpu" || dt != DType::f32) {
    throw std::invalid_argument("--device is cuda, or cpu with --dtype f32");
  }
  const int64_t c = heads * head_dim;

  for (auto [b, t] : parse_cases(cases)) {
    std::mt19937 rng(static_cast<uint32_t>(b * 100003 + t));
    auto [qkv_f, qkv_h] = random_input({b, t, 3 * c}, dt, rng);
    auto [dout_f, dout_h] = random_input({b, t, c}, dt, rng);
    const Tensor qkv = qkv_h.to(dev), dout = dout_h.to(dev);
    Tensor out = Tensor::empty({b, t, c}, dt, dev), dqkv = Tensor::empty({b, t, 3 * c}, dt, dev);
    Tensor lse = Tensor::empty({b, heads, t}, DType::f32, dev);
    device_synchronize(dev);

    auto fwd = [&] { ops::attention_forward(qkv, out, lse, heads); };
    auto bwd = [&] { ops::attention_backward(qkv, out, dout, lse, dqkv, heads); };
    auto both = [&] {
      fwd();
      bwd();
    };
    const Timing tf = time_calls(fwd, dev, target_s, reps);
    const Timing tb = time_calls(bwd, dev, target_s, reps);
    const Timing tfb = time_calls(both, dev, target_s, reps);

    // The first sample's forward against the CPU reference on the same rounded inputs.
    double max_err = -1;
    if (check) {
      fwd();
      Tensor gpu_out = Tensor::empty({b, t, c}, dt);
      gpu_out.copy_from(out);
      Tensor gpu_f = Tensor::empty({b, t, c});
      ops::convert(gpu_out, gpu_f);
      Tensor ref = Tensor::empty({1, t, c}), ref_lse = Tensor::empty({1, heads, t});
      ops::attention_forward(qkv_f.rows(0, 1), ref, ref_lse, heads);
      max_err = 0;
      const float* g = gpu_f.data<float>();
      const float* r = ref.data<float>();
      for (int64_t i = 0; i < t * c; ++i) {
        const double e = std::fabs(static_cast<double>(g[i]) - r[i]);
        max_err = std::isfinite(e) ? std::max(max_err, e) : INFINITY;
      }
    }

    char err[32] = "null";
    if (max_err >= 0 && std::isfinite(max_err))
      std::snprintf(err, sizeof err, "%.3g", max_err);
    else if (max_err >= 0)
      std::snprintf(err, sizeof err, "\"inf\"");
    const double fwd_flop = 2.0 * 2.0 * b * heads * double(t) * t * head_dim / 2.0;
    auto tflops = [](double flop, double ms) { return flop / (ms * 1e-3) / 1e12; };
    std::printf(
        "{\"impl\":\"tern\",\"device\":\"%s\",\"dtype\":\"%s\",\"causal\":true,\"batch\":%lld,"
        "\"seq\":%lld,\"heads\":%lld,\"head_dim\":%lld,\"fwd_ms\":%.6f,\"bwd_ms\":%.6f,"
        "\"fwdbwd_ms\":%.6f,\"fwd_host_ms\":%.6f,\"bwd_host_ms\":%.6f,\"fwdbwd_host_ms\":%.6f,"
        "\"iters\":[%d,%d,%d],\"reps\":%d,\"fwd_flop\":%.0f,\"fwd_tflops\":%.3f,"
        "\"bwd_tflops\":%.3f,\"fwdbwd_tflops\":%.3f,\"max_abs_err\":%s}\n",
        device.c_str(), dtype.c_str(), static_cast<long long>(b), static_cast<long long>(t),
        static_cast<long long>(heads), static_cast<long long>(head_dim), tf.ms, tb.ms, tfb.ms,
        tf.host_ms, tb.host_ms, tfb.host_ms, tf.iters, tb.iters, tfb.iters, reps, fwd_flop,
        tflops(fwd_flop, tf.ms), tflops(2.5 * fwd_flop, tb.ms), tflops(3.5 * fwd_flop, tfb.ms),
        err);
    std::fflush(stdout);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "tern_bench_attention: %s\n", e.what());
  return 1;
}
