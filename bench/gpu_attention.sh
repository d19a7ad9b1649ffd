#!/usr/bin/env bash
# Attention kernel benchmark on one CUDA GPU: tern's fused causal attention (cuda/attention.cu,
# through ops::attention_forward / attention_backward) against PyTorch's flash attention
# (F.scaled_dot_product_attention(is_causal=True) under sdpa_kernel(SDPBackend.FLASH_ATTENTION)),
# the kernels alone, same shapes, same dtype, in the same call (not a test: it prints ratio
# lines, it does not fail on them).
#
#   bash bench/gpu_attention.sh        # from the repository root, on a machine with one NVIDIA GPU
#
# tern: bench/attention_bench.cpp (TERN_BIN/tern_bench_attention, built in CUDA builds:
# cmake --build build --target tern_bench_attention). PyTorch: bench/torch_attention.py.
# Shapes (ATTN_CASES, B x T): 8x256 and 8x1024 (batch 8), and 64x256 (the GPT benchmark's
# training shape, configs/shakespeare_gpt_gpu.ini); 6 heads of 64 (ATTN_HEADS, ATTN_HEAD_DIM),
# bf16 (ATTN_DTYPE), causal; q, k and v packed [B, T, 3C] as a qkv projection writes them.
# Both sides time back-to-back calls between two synchronisations (tern: std::chrono around
# device_synchronize; PyTorch: CUDA events), loops of ~ATTN_SECONDS each, the median of 7.
#
# What the lines mean, per case and for forward, backward (alone, from a saved forward) and
# forward + backward:
#   ms                 per call (host launch costs included where the host is the slower side;
#                      "host-bound" marks a side whose host took > 90% of that time to queue
#                      the calls: the kernel itself is faster than the figure)
#   TFLOP/s            causal forward = 2 x 2 x B x H x T^2 x D / 2, backward = 2.5 x forward,
#                      forward + backward = 3.5 x forward
#   torch/tern         PyTorch's ms / tern's ms: above 1, tern is faster (goal >= 0.8)
#   max_abs_err        tern's GPU forward of the first sample against its CPU reference on the
#                      same rounded inputs (bf16 output: ~1e-2 is rounding)
# Summary: BENCH_OUT/attention.json.
#
# Environment:
#   TERN_BIN       folder with tern_bench_attention (default build/bin; not built here)
#   BENCH_OUT      logs and attention.json (default bench/out-gpu)
#   PYTHON         the Python with CUDA PyTorch (default python3)
#   ATTN_CASES     default "8x256,8x1024,64x256"
#   ATTN_SECONDS   seconds per timed loop (default 0.05; 3 kinds x 7 loops x 2 sides per case)
#   ATTN_HEADS, ATTN_HEAD_DIM, ATTN_DTYPE (bf16 | f32)
set -uo pipefail

TERN_BIN=${TERN_BIN:-build/bin}
OUT=${BENCH_OUT:-bench/out-gpu}
PY=${PYTHON:-python3}
CASES=${ATTN_CASES:-8x256,8x1024,64x256}
SECS=${ATTN_SECONDS:-0.05}
HEADS=${ATTN_HEADS:-6}
HEAD_DIM=${ATTN_HEAD_DIM:-64}
DTYPE=${ATTN_DTYPE:-bf16}

if [[ ! -f CMakeLists.txt || ! -f bench/torch_attention.py ]]; then
  echo "run from the repository root: bash bench/gpu_attention.sh" >&2
  exit 2
fi
mkdir -p "$OUT"
rm -f "$OUT/attention.tern.jsonl" "$OUT/attention.torch.jsonl" "$OUT/attention.json"
args=(--cases "$CASES" --heads "$HEADS" --head-dim "$HEAD_DIM" --seconds "$SECS")

echo "== tern attention kernel vs PyTorch flash attention =="
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null | head -1)"
echo "cases (B x T): $CASES; $HEADS heads x $HEAD_DIM, $DTYPE, causal"

rc=0
if [[ -x $TERN_BIN/tern_bench_attention ]]; then
  timeout -k 10 300 "$TERN_BIN/tern_bench_attention" "${args[@]}" --dtype "$DTYPE" \
    >"$OUT/attention.tern.jsonl" 2>"$OUT/attention.tern.log" || rc=$?
  ((rc == 0)) || { echo "  tern FAILED (exit $rc, log $OUT/attention.tern.log):"; tail -n 6 "$OUT/attention.tern.log" | sed 's/^/    /'; }
else
  echo "  tern FAILED: no $TERN_BIN/tern_bench_attention (cmake --build <dir> --target tern_bench_attention)"
fi
rc=0
timeout -k 10 300 "$PY" bench/torch_attention.py "${args[@]}" --dtype "${DTYPE/f32/fp32}" \
  >"$OUT/attention.torch.jsonl" 2>"$OUT/attention.torch.log" || rc=$?
((rc == 0)) || { echo "  pytorch FAILED (exit $rc, log $OUT/attention.torch.log):"; tail -n 6 "$OUT/attention.torch.log" | sed 's/^/    /'; }

OUT=$OUT python3 - <<'EOF'
import json, os

OUT = os.environ["OUT"]


def lines(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip().startswith("{")]
    except OSError:
        return []


tern = {(r["batch"], r["seq"]): r for r in lines(f"{OUT}/attention.tern.jsonl")}
torch = {(r["batch"], r["seq"]): r for r in lines(f"{OUT}/attention.torch.jsonl")}
any_r = next(iter(tern.values()), None) or next(iter(torch.values()), None) or {}
print(f"device: {any_r.get('device', '?')}; pytorch {next(iter(torch.values()), {}).get('torch', '-')}")
print()
rows = []
for key in sorted(set(tern) | set(torch), key=lambda k: (k[1], k[0])):
    a, b = tern.get(key), torch.get(key)
    r = {"batch": key[0], "seq": key[1], "tern": a, "pytorch": b}
    parts = []
    for kind, label in (("fwd", "forward"), ("bwd", "backward"), ("fwdbwd", "forward+backward")):
        ta, tb = a and a[f"{kind}_ms"], b and b[f"{kind}_ms"]
        ratio = tb / ta if ta and tb else None
        r[f"{kind}_torch_over_tern"] = ratio
        side = lambda x, t: ("FAILED" if not x else f"{t:.4f} ms ({x[f'{kind}_tflops']:.0f} TFLOP/s"
                             + (", host-bound" if x[f"{kind}_host_ms"] > 0.9 * t else "") + ")")
        parts.append(f"  {label}: tern {side(a, ta)}, pytorch flash {side(b, tb)}: torch/tern "
                     + ("FAILED" if ratio is None else f"{ratio:.2f}x") + " (goal >= 0.8)")
    x = a or b
    print(f"attention {key[0]}x{key[1]} (B x T; {x['heads']} heads x {x['head_dim']}, {x['dtype']}, causal)"
          + (f", tern max_abs_err vs CPU {a['max_abs_err']}" if a else ""))
    print("\n".join(parts))
    rows.append(r)
print()
print("| B x T | tern fwd ms | flash fwd ms | fwd torch/tern | tern fwd+bwd ms | flash fwd+bwd ms "
      "| fwd+bwd torch/tern | tern fwd+bwd TFLOP/s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
f = lambda v, s=".4f": "FAILED" if v is None else format(v, s)
fx = lambda v: "FAILED" if v is None else f"{v:.2f}x"
for r in rows:
    a, b = r["tern"] or {}, r["pytorch"] or {}
    print(f"| {r['batch']}x{r['seq']} | {f(a.get('fwd_ms'))} | {f(b.get('fwd_ms'))} "
          f"| {fx(r['fwd_torch_over_tern'])} | {f(a.get('fwdbwd_ms'))} | {f(b.get('fwdbwd_ms'))} "
          f"| {fx(r['fwdbwd_torch_over_tern'])} | {f(a.get('fwdbwd_tflops'), '.0f')} |")
with open(f"{OUT}/attention.json", "w") as fh:
    json.dump({"benchmark": "bench/gpu_attention.sh", "goal_torch_over_tern": 0.8, "cases": rows}, fh, indent=1)
    fh.write("\n")
EOF
