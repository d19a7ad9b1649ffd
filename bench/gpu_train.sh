#!/usr/bin/env bash
# GPU training-throughput benchmark: tern-train on one CUDA GPU against PyTorch on the same GPU
# (not a test: it prints ratio lines and a table, it does not fail on them).
#
#   bash bench/gpu_train.sh            # from the repository root, on a machine with one NVIDIA GPU
#   BENCH_MODELS="digits_cnn gpt" BENCH_SECONDS=4 bash bench/gpu_train.sh   # the CNN and the GPT
#
# Models (same config on both sides):
#   digits_mlp  configs/digits_mlp.ini      fp32, TF32 off  64-128-128-10, batch 64 (launch-bound)
#   wide_mlp    bench/configs/wide_mlp.ini  fp32, TF32 off  784-1024-1024-10, batch 256
#   gemm_mlp    bench/configs/gemm_mlp.ini  bf16            8 linear layers of 4096, batch 4096
#                                                           (GEMM-bound, 134 M parameters)
#   digits_cnn  configs/digits_cnn.ini      fp32, TF32 off  2 x (conv 3x3 + batch norm + relu +
#                                                           max pool), linear 64, linear 10, on
#                                                           1x8x8 images, batch 64 (launch-bound;
#                                                           goal tern >= 2x eager)
#   gpt         configs/shakespeare_gpt_gpu.ini  bf16       character GPT: 6 blocks x 6 heads,
#                                                           width 384, context 256, batch 64,
#                                                           output layer tied to the embedding
#                                                           (10.75 M parameters; goal tern >=
#                                                           1.2x compile), on data/shakespeare.h5
# tern: tern-train --run.device=cuda --run.precision=fp32|bf16 --run.tf32=false.
# PyTorch: bench/torch_gpu_mlp.py (the MLPs and the CNN) and bench/torch_gpt.py --device cuda (the
# GPT: F.scaled_dot_product_attention(is_causal=True), flash attention under bf16), eager and
# torch.compile(model) in its default mode and in mode="max-autotune" (autotuned kernels and CUDA
# graphs, the mode meant for launch-bound models; reported beside the default, and the GPT's goal
# is against the faster of the two), fused AdamW in all, autocast for bf16 (fp32 master
# weights, like tern's bf16), TF32 off in matmuls and cuDNN convolutions (cudnn.benchmark on):
# same model, batch, optimizer, LR schedule, clipping and number of steps. The peers preload the
# whole dataset on the GPU (they are never data-bound; tern's loader is part of tern's figure):
# the GPT peer gathers its random windows of the token file there; for gemm_mlp the peer uses
# synthetic data made on the GPU with the shapes of bench/data/gemm.h5.
#
# Steady-state throughput, both sides the same estimator as bench/cpu_train.sh: the median of
# per-interval samples/s after a warm-up. tern: its metrics.jsonl records (one per
# train.log_every steps), the first ~20% skipped and the last dropped; PyTorch: the same total
# steps, the same warm-up (untimed; it includes torch.compile's compilation) and interval length,
# with the GPU synchronized only at interval boundaries.
# Steps: a short tern probe and a short eager-PyTorch probe give each side's steps/s; every run of
# a model then does N = BENCH_SECONDS x (the slower rate) steps in ~40 intervals, so the slowest
# run of a model lasts about BENCH_SECONDS and all runs go through the same steps.
# Also measured: the bf16 GEMM rate cuBLAS reaches alone (torch.matmul 4096^3 and 8192^3, CUDA
# events, median of 30), and for gemm_mlp the achieved TFLOP/s = 6 x parameters x samples/s / 1e12
# and its fraction of the 4096^3 rate (every GEMM of that model is 4096 x 4096 x 4096).
# The GPT's figures: tokens/s = samples/s x block_size (256); achieved FLOP/s = tokens/s x
# (6 N + 12 L T C), nanoGPT's estimate_mfu / PaLM's appendix B (N: parameters without the position
# table, 10,651,776; L = 6 blocks, T = 256, C = 384: 71.0 MFLOP per token); MFU = that over the
# best cuBLAS bf16 GEMM rate measured in the same run (the larger of 4096^3 and 8192^3).
#
# Environment:
#   TERN_BIN       folder with tern-train and tern-data (default build/bin; not built here)
#   BENCH_OUT      run folders, logs and the summary gpu_train.json (default bench/out-gpu)
#   BENCH_SECONDS  target seconds per timed run (default 8: about 6 minutes for all five models,
#                  torch.compile's compilation included)
#   PYTHON         the Python with CUDA PyTorch, h5py and numpy (default python3)
#   BENCH_MODELS   which models (default "digits_mlp wide_mlp gemm_mlp digits_cnn gpt")
#   BENCH_COMPILE_MODES  the torch.compile peers (default "compile max-autotune"; each is a run)
#   BENCH_AUTOTUNE_TIMEOUT  seconds allowed to a max-autotune run, compilation included (600)
# A run that fails prints FAILED with the tail of its log, and the script goes on.
set -uo pipefail

TERN_BIN=${TERN_BIN:-build/bin}
OUT=${BENCH_OUT:-bench/out-gpu}
TARGET_S=${BENCH_SECONDS:-8}
PY=${PYTHON:-python3}
PEER=bench/torch_gpu_mlp.py
RUN_TIMEOUT=$(python3 -c "print(int($TARGET_S * 5 + 120))")  # per run, compilation included
COMPILE_MODES=${BENCH_COMPILE_MODES:-compile max-autotune}
AUTOTUNE_TIMEOUT=${BENCH_AUTOTUNE_TIMEOUT:-600}  # max-autotune's compilation takes minutes

if [[ ! -f CMakeLists.txt || ! -f $PEER ]]; then
  echo "run from the repository root: bash bench/gpu_train.sh" >&2
  exit 2
fi
mkdir -p "$OUT" bench/data
rm -f "$OUT/rows.jsonl" "$OUT/gpu_train.json"

# ---- report helper: reads metrics.jsonl and the peers' JSON, prints lines, writes the summary ----
cat >"$OUT/report.py" <<'EOF'
import json, math, os, statistics, sys

OUT = os.environ["OUT"]
sys.path.insert(0, os.environ["PEER_DIR"])  # bench/: this file runs from $OUT
from tern_peer import config_params, lm_flops_per_token, parse_tern_ini

# The GPT's goal is against the faster of torch.compile's two modes.
GOALS = {"digits_cnn": ("tern_vs_eager", 2.0, "tern/eager >= 2x"),
         "gpt": ("tern_vs_best_compile", 1.2, "tern/compile >= 1.2x, the faster compile mode")}
MODES = ("eager", "compile", "compile_max")  # compile_max: torch.compile mode="max-autotune"


def load(path):
    try:
        with open(path) as f:
            return json.loads(f.readline())
    except (OSError, ValueError):
        return None


def params_of(cfg):  # trained parameters of a tern config (tern_peer.config_params)
    return config_params(parse_tern_ini(cfg))


def flops_per_sample(cfg):
    """Training FLOPs per sample and how they were estimated: language models 6N + 12LTC per
    token x T; MLPs 6 x parameters; None for convolutional models (no estimate here)."""
    ini = parse_tern_ini(cfg)
    if "data.block_size" in ini:
        fpt, n, l, t, c = lm_flops_per_token(ini)
        return fpt * t, (f"{fpt / 1e6:.2f} MFLOP per token = 6N + 12LTC = 6 x {n:,} + 12 x {l} x "
                         f"{t} x {c}; N: parameters without the position table, nanoGPT's "
                         f"estimate_mfu")
    if any(l.split()[0] == "conv2d" for l in ini.get("layers", [])):
        return None, None
    return 6.0 * params_of(cfg), "6 x parameters per sample"


def intervals(run_dir):
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    return [r for r in recs if "event" not in r and "samples_per_sec" in r]


def tern_rate(run_dir, batch):
    """A probe: steps/s (median interval, the first skipped) and the seconds those intervals took."""
    iv = intervals(run_dir)
    if len(iv) < 3:
        sys.exit(f"{run_dir}: only {len(iv)} interval records")
    secs = sum((b["step"] - a["step"]) * batch / b["samples_per_sec"] for a, b in zip(iv, iv[1:]))
    print(statistics.median(r["samples_per_sec"] for r in iv[1:]) / batch, secs)


def tern_summary(run_dir):
    """bench/cpu_train.sh's estimator: skip ~20% of the intervals, drop the last."""
    iv = intervals(run_dir)
    skip = max(2, int(len(iv) * 0.2))
    kept = iv[skip:-1] if len(iv) > skip + 2 else iv[skip:]
    if not kept:
        sys.exit(f"{run_dir}: too few interval records ({len(iv)})")
    q = max(1, len(kept) // 4)
    ms = {k: statistics.mean(r[k] for r in kept) for k in kept[0] if k.endswith("_ms")}
    print(json.dumps({
        "samples_per_sec": statistics.median(r["samples_per_sec"] for r in kept),
        "samples_per_sec_mean": len(kept) / sum(1.0 / r["samples_per_sec"] for r in kept),
        "intervals": len(kept), "skipped_intervals": skip,
        "first_quarter": statistics.median(r["samples_per_sec"] for r in kept[:q]),
        "last_quarter": statistics.median(r["samples_per_sec"] for r in kept[-q:]),
        "per_step_ms": ms}))


def fmt(x, spec=",.0f"):
    return "FAILED" if x is None else format(x, spec)


def row(name, cfg, precision, steps, log_every):
    tern = load(f"{OUT}/{name}.tern.json")
    eager = load(f"{OUT}/{name}.eager.json")
    comp = load(f"{OUT}/{name}.compile.json")
    comp_max = load(f"{OUT}/{name}.max-autotune.json")
    gemm = load(f"{OUT}/gemm_rate.json") or {}
    params = params_of(cfg)
    ini = parse_tern_ini(cfg)
    block = int(ini.get("data.block_size", 0))
    sps = {"tern": tern and tern["samples_per_sec"], "eager": eager and eager["samples_per_sec"],
           "compile": comp and comp["samples_per_sec"],
           "compile_max": comp_max and comp_max["samples_per_sec"]}
    ratio = lambda a, b: sps[a] / sps[b] if sps[a] and sps[b] else None
    best_compile = max((sps[k] for k in ("compile", "compile_max") if sps[k]), default=None)
    fps, flops_how = flops_per_sample(cfg)
    tflops = {k: fps * v / 1e12 if v and fps else None for k, v in sps.items()}
    frac = {}
    for n in (4096, 8192):
        ref = gemm.get(f"gemm_tflops_{n}")
        frac[str(n)] = {k: v / ref if v and ref else None for k, v in tflops.items()}
    peak = max((gemm.get(f"gemm_tflops_{n}") or 0 for n in (4096, 8192)), default=0) or None
    r = {"model": name, "config": cfg, "precision": precision, "tf32": False,
         "batch": int(ini["train.batch_size"]), "params": params,
         "steps": int(steps), "log_every": int(log_every),
         "samples_per_sec": sps, "tern_vs_eager": ratio("tern", "eager"),
         "tern_vs_compile": ratio("tern", "compile"),
         "tern_vs_compile_max_autotune": ratio("tern", "compile_max"),
         "tern_vs_best_compile": sps["tern"] / best_compile if sps["tern"] and best_compile else None,
         "flops_per_sample": fps,
         "flops_estimate": flops_how, "tflops": tflops,
         "fraction_of_cublas_bf16_gemm": frac, "tern": tern,
         "pytorch_eager": eager, "pytorch_compile": comp, "pytorch_compile_max_autotune": comp_max}
    if block:
        r["block_size"] = block
        r["tokens_per_sec"] = {k: v * block if v else None for k, v in sps.items()}
        r["mfu_peak_tflops"] = peak
        r["mfu"] = {k: v / peak if v and peak else None for k, v in tflops.items()}
    if name in GOALS:
        key, bar, r["goal"] = GOALS[name]
        r["goal_met"] = r[key] is not None and r[key] >= bar
    with open(f"{OUT}/rows.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
    x = lambda v: "" if v is None else f" (tern {v:.2f}x)"
    goal = f" (goal {GOALS[name][2]})" if name in GOALS else ""
    print(f"{name} {precision} samples/s: tern {fmt(sps['tern'])}, pytorch eager {fmt(sps['eager'])}"
          f"{x(r['tern_vs_eager'])}, pytorch compile {fmt(sps['compile'])}{x(r['tern_vs_compile'])}, "
          f"compile max-autotune {fmt(sps['compile_max'])}{x(r['tern_vs_compile_max_autotune'])}{goal}"
          + (f": {'met' if r['goal_met'] else 'NOT met'}" if goal else ""))
    if block:
        print("  " + tokens_line(r))
        print("  " + mfu_line(r, gemm))
    if tern:
        ms = ", ".join(f"{k[:-3]} {v:.3f}" for k, v in tern["per_step_ms"].items())
        print(f"  tern per-step ms: {ms} ({tern['intervals']} intervals)")
        f, l = tern["first_quarter"], tern["last_quarter"]
        if abs(l - f) > 0.15 * f:
            print(f"  tern throughput drifts: first quarter {f:,.0f}, last quarter {l:,.0f} samples/s")
    for k, p in (("eager", eager), ("compile", comp), ("compile max-autotune", comp_max)):
        if p:
            mem = p["peak_memory_mb"]
            print(f"  pytorch {k}: first step {p['first_step_seconds']:.2f} s, overall "
                  f"{p['samples_per_sec_overall']:,.0f} samples/s, peak memory "
                  + ("-" if mem is None else f"{mem:,.0f} MB"))
    if name == "gemm_mlp" and gemm.get("gemm_tflops_4096"):
        parts = [f"{k} FAILED" if tflops[k] is None else
                 f"{k} {tflops[k]:.0f} TFLOP/s ({frac['4096'][k]:.2f})" for k in ("tern",) + MODES]
        print(f"  achieved (6 x {params:,} params x samples/s), fraction of cuBLAS bf16 4096^3 "
              f"({gemm['gemm_tflops_4096']:.0f} TFLOP/s): " + ", ".join(parts))


def tokens_line(r):
    tps, x = r["tokens_per_sec"], lambda v: "FAILED" if v is None else f"{v:.2f}x"
    return (f"{r['model']} tokens/s (samples/s x {r['block_size']}): tern {fmt(tps['tern'])}, "
            f"pytorch eager {fmt(tps['eager'])}, compile {fmt(tps['compile'])}, compile max-autotune "
            f"{fmt(tps['compile_max'])}; tern/compile {x(r['tern_vs_compile'])}, tern/max-autotune "
            f"{x(r['tern_vs_compile_max_autotune'])}, tern/eager {x(r['tern_vs_eager'])}"
            + (f" (goal {r['goal']})" if r.get("goal") else ""))


def mfu_line(r, gemm):
    tf, mfu, peak = r["tflops"], r["mfu"], r["mfu_peak_tflops"]
    parts = ", ".join(f"{k} " + ("FAILED" if tf[k] is None else f"{tf[k]:.1f} TFLOP/s"
                                 + ("" if mfu[k] is None else f" = MFU {mfu[k]:.3f}"))
                      for k in ("tern",) + MODES)
    ref = (f"of the best cuBLAS bf16 GEMM rate in this run, {peak:.0f} TFLOP/s" if peak
           else "no cuBLAS GEMM rate measured, so no MFU")
    return f"MFU: achieved FLOP/s = tokens/s x {r['flops_estimate']}: {parts} ({ref})"


def gemm_line():
    g = load(f"{OUT}/gemm_rate.json")
    if not g:
        print("cuBLAS bf16 GEMM rate (torch.matmul alone): FAILED")
        return
    print(f"cuBLAS bf16 GEMM rate (torch.matmul alone, median of {g['runs']}): 4096^3 "
          f"{g['gemm_tflops_4096']:.0f} TFLOP/s ({g['gemm_ms_4096']:.3f} ms), 8192^3 "
          f"{g['gemm_tflops_8192']:.0f} TFLOP/s ({g['gemm_ms_8192']:.3f} ms); {g['device']}, "
          f"torch {g['torch']}")


def table(tern_version, seconds, elapsed):
    rows = [json.loads(l) for l in open(f"{OUT}/rows.jsonl")] if os.path.exists(f"{OUT}/rows.jsonl") else []
    gemm = load(f"{OUT}/gemm_rate.json") or {}
    peer = next((r[k] for r in rows for k in ("pytorch_eager", "pytorch_compile") if r.get(k)), None) or {}
    device = gemm.get("device") or peer.get("device")
    torch_version = gemm.get("torch") or peer.get("torch")
    print(f"device: {device}; tern: {tern_version}; pytorch: {torch_version}")
    gemm_line()
    print()
    print("| model | precision | steps | tern samples/s | eager samples/s | compile samples/s "
          "| max-autotune samples/s | tern/eager | tern/compile | tern/max-autotune | tern TFLOP/s "
          "| of cuBLAS bf16 GEMM |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        s = r["samples_per_sec"]
        ratio = lambda v: "FAILED" if v is None else f"{v:.2f}x"
        gemm_bound = r["model"] == "gemm_mlp"
        tf = fmt(r["tflops"]["tern"], ".0f") if gemm_bound else "-"
        fr = fmt(r["fraction_of_cublas_bf16_gemm"]["4096"]["tern"], ".2f") if gemm_bound else "-"
        if gemm_bound and r["fraction_of_cublas_bf16_gemm"]["4096"]["tern"] is None and r["tflops"]["tern"]:
            fr = "no GEMM rate"
        if "mfu" in r:  # language models: MFU against the best GEMM rate
            tf = fmt(r["tflops"]["tern"], ".1f")
            fr = "no GEMM rate" if r["mfu"]["tern"] is None and r["tflops"]["tern"] else \
                fmt(r["mfu"]["tern"], ".3f") + " (MFU)"
        print(f"| {r['model']} | {r['precision']} | {r['steps']} | {fmt(s['tern'])} | {fmt(s['eager'])} "
              f"| {fmt(s['compile'])} | {fmt(s.get('compile_max'))} | {ratio(r['tern_vs_eager'])} "
              f"| {ratio(r['tern_vs_compile'])} | {ratio(r.get('tern_vs_compile_max_autotune'))} "
              f"| {tf} | {fr} |")
    print()
    print("of cuBLAS bf16 GEMM: gemm_mlp against the 4096^3 rate (all its GEMMs are 4096^3); "
          "language models: MFU against the best measured rate")
    for r in rows:
        if "tokens_per_sec" in r:
            print(tokens_line(r))
            print("  " + mfu_line(r, gemm))
    summary = {"benchmark": "bench/gpu_train.sh", "device": device, "tern": tern_version,
               "torch": torch_version, "bench_seconds": float(seconds),
               "elapsed_seconds": float(elapsed), "gemm_rate": gemm, "models": rows}
    with open(f"{OUT}/gpu_train.json", "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "ini":
    print(parse_tern_ini(args[0])[args[1]])
elif cmd == "field":
    print(load(args[0])[args[1]])
elif cmd == "tern-rate":
    tern_rate(args[0], int(args[1]))
elif cmd == "tern-summary":
    tern_summary(args[0])
elif cmd == "gemm-line":
    gemm_line()
elif cmd == "row":
    row(*args)
elif cmd == "table":
    table(*args)
EOF
report() { OUT=$OUT PEER_DIR=$PWD/bench python3 "$OUT/report.py" "$@"; }  # imports bench/tern_peer.py

# failed WHAT RC LOG: one FAILED line and the tail of the log
failed() {
  echo "  $1 FAILED (exit $2, log $3):"
  tail -n 6 "$3" 2>/dev/null | sed 's/^/    /'
}

TERN_OK=1
for b in tern-train tern-data; do
  if [[ ! -x $TERN_BIN/$b ]]; then
    echo "WARNING: $TERN_BIN/$b missing (build tern first); the tern runs will be FAILED"
    TERN_OK=0
  fi
done

# ---- header -----------------------------------------------------------------------------------
echo "== tern GPU training benchmarks =="
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null | head -1)"
echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
TERN_VERSION=$( ((TERN_OK)) && "$TERN_BIN/tern-train" --version 2>&1 | head -1 || echo "none")
echo "tern: $TERN_VERSION"
echo "steady state: ~${TARGET_S} s for the slowest run of each model, median of per-interval samples/s after a warm-up"
echo

# ---- data -------------------------------------------------------------------------------------
make_data() {  # FILE tern-data ARGS...
  local file=$1 rc=0; shift
  [[ -f $file ]] && return 0
  ((TERN_OK)) || return 0
  "$TERN_BIN/tern-data" "$@" >"$OUT/data.log" 2>&1 || rc=$?
  ((rc == 0)) || failed "tern-data $1 -> $file" "$rc" "$OUT/data.log"
}
MODELS=" ${BENCH_MODELS:-digits_mlp wide_mlp gemm_mlp digits_cnn gpt} "
want() { [[ $MODELS == *" $1 "* ]]; }
if want digits_mlp || want digits_cnn; then
  make_data data/digits.h5 convert --input data/digits.csv --output data/digits.h5
fi
want wide_mlp && make_data bench/data/wide.h5 synth --output bench/data/wide.h5 --rows 20000 --features 784 --classes 10
want gemm_mlp && make_data bench/data/gemm.h5 synth --output bench/data/gemm.h5 --rows 8192 --features 4096 --classes 4096
want gpt && make_data data/shakespeare.h5 text --input data/tinyshakespeare.txt --output data/shakespeare.h5

# ---- cuBLAS bf16 GEMM rate --------------------------------------------------------------------
rc=0
timeout -k 10 120 "$PY" "$PEER" --gemm-rate >"$OUT/gemm_rate.json" 2>"$OUT/gemm_rate.log" || rc=$?
if ((rc == 0)); then
  report gemm-line
else
  rm -f "$OUT/gemm_rate.json"
  failed "cuBLAS GEMM rate" "$rc" "$OUT/gemm_rate.log"
fi
echo

# ---- runs -------------------------------------------------------------------------------------
# tern_train DIR LOG CFG PRECISION STEPS LOG_EVERY EXTRA...: one tern-train run on the GPU
tern_train() {
  local dir=$1 log=$2 cfg=$3 prec=$4 steps=$5 log_every=$6; shift 6
  rm -rf "$dir"
  ((TERN_OK)) || { echo "no $TERN_BIN/tern-train" >"$log"; return 127; }
  local rc=0
  timeout -k 10 "$RUN_TIMEOUT" "$TERN_BIN/tern-train" --config "$cfg" --run.dir="$dir" \
    --run.device=cuda --run.precision="$prec" --run.tf32=false --run.progress=off \
    --train.steps="$steps" --train.log_every="$log_every" --train.eval_every=0 "$@" >"$log" 2>&1 || rc=$?
  rm -f "$dir/model.h5"   # the export is not needed here (537 MB for gemm_mlp)
  return $rc
}

# peer JSON LOG CFG PRECISION MODE ARGS...: one run of the PyTorch peer, MODEL_PEER (set for the
# call of bench_model) or bench/torch_gpu_mlp.py
peer() {
  local json=$1 log=$2 cfg=$3 prec=$4 mode=$5; shift 5
  timeout -k 10 "${PEER_TIMEOUT:-$RUN_TIMEOUT}" "$PY" "${MODEL_PEER:-$PEER}" --tern-config "$cfg" --precision "$prec" --mode "$mode" \
    "$@" >"$json" 2>"$log" || { local rc=$?; rm -f "$json"; return $rc; }
}

# bench_model NAME CFG PRECISION PEER_ARGS...: probes, then tern, eager and the compile modes over the same
# steps, then the model's lines (report row)
bench_model() {
  local name=$1 cfg=$2 prec=$3; shift 3
  local batch rc probe out rate secs tern_rate="" peer_rate="" steps log_every warm
  rm -rf "${OUT:?}/$name" "$OUT/$name".*
  batch=$(report ini "$cfg" train.batch_size)
  echo "-- $name ($cfg, $prec, batch $batch)"

  # tern probe: 50 steps; if its intervals took under 0.25 s, once more sized for ~0.5 s
  probe=50
  while :; do
    rc=0
    tern_train "$OUT/$name.probe" "$OUT/$name.probe.log" "$cfg" "$prec" "$probe" $((probe / 10)) \
      --run.log_level=warn || rc=$?
    if ((rc != 0)); then failed "$name: tern probe" "$rc" "$OUT/$name.probe.log"; break; fi
    if ! out=$(report tern-rate "$OUT/$name.probe" "$batch" 2>&1); then
      echo "  $name: tern probe FAILED: $out"
      break
    fi
    read -r rate secs <<<"$out"
    tern_rate=$rate
    python3 -c "import sys; sys.exit(0 if $secs < 0.25 and $probe == 50 else 1)" || break
    probe=$(python3 -c "print(max(100, -(-int($rate * 0.5) // 10) * 10))")
  done
  rm -rf "$OUT/$name.probe"

  # eager-PyTorch probe: 20 warm-up steps, then ~1 s
  rc=0
  peer "$OUT/$name.probe.eager.json" "$OUT/$name.probe.eager.log" "$cfg" "$prec" eager \
    --warmup 20 --seconds 1 "$@" || rc=$?
  if ((rc == 0)); then
    peer_rate=$(report field "$OUT/$name.probe.eager.json" steps_per_sec)
  else
    failed "$name: pytorch probe" "$rc" "$OUT/$name.probe.eager.log"
  fi
  if [[ -z $tern_rate && -z $peer_rate ]]; then
    echo "$name $prec: FAILED (no probe ran)"
    report row "$name" "$cfg" "$prec" 0 0 >/dev/null
    return
  fi

  # N = BENCH_SECONDS x the slower rate, at least 40 steps, a multiple of the ~40 intervals;
  # warm-up: the first 20% of the intervals (what tern's summary skips)
  read -r steps log_every warm <<<"$(python3 -c "
rate = min(float(r) for r in '$tern_rate $peer_rate'.split())
n = max(40, int(rate * $TARGET_S))
every = max(1, n // 40)
n = n // every * every
print(n, every, (n // every) // 5 * every)")"
  echo "  probes, steps/s: tern $(printf '%.0f' "${tern_rate:-0}"), pytorch eager" \
    "$(printf '%.0f' "${peer_rate:-0}") (0: failed) -> $steps steps, $log_every per interval"

  rc=0
  tern_train "$OUT/$name" "$OUT/$name.tern.log" "$cfg" "$prec" "$steps" "$log_every" || rc=$?
  if ((rc == 0)); then
    report tern-summary "$OUT/$name" >"$OUT/$name.tern.json" || rc=$?
  fi
  if ((rc != 0)); then
    rm -f "$OUT/$name.tern.json"
    failed "$name: tern" "$rc" "$OUT/$name.tern.log"
  fi
  for mode in eager $COMPILE_MODES; do
    rc=0
    PEER_TIMEOUT=$([[ $mode == max-autotune ]] && echo "$AUTOTUNE_TIMEOUT" || echo "$RUN_TIMEOUT") \
      peer "$OUT/$name.$mode.json" "$OUT/$name.$mode.log" "$cfg" "$prec" "$mode" \
      --warmup "$warm" --steps $((steps - warm)) --interval "$log_every" --train-steps "$steps" "$@" || rc=$?
    ((rc == 0)) || failed "$name: pytorch $mode" "$rc" "$OUT/$name.$mode.log"
  done
  report row "$name" "$cfg" "$prec" "$steps" "$log_every"
}

want digits_mlp && bench_model digits_mlp configs/digits_mlp.ini fp32
want wide_mlp && bench_model wide_mlp bench/configs/wide_mlp.ini fp32
want gemm_mlp && bench_model gemm_mlp bench/configs/gemm_mlp.ini bf16 --synthetic 8192
want digits_cnn && bench_model digits_cnn configs/digits_cnn.ini fp32
want gpt && MODEL_PEER=bench/torch_gpt.py bench_model gpt configs/shakespeare_gpt_gpu.ini bf16 --device cuda

# ---- summary ----------------------------------------------------------------------------------
echo
echo "== summary (samples/s: median of per-interval throughput; ratios: tern / pytorch) =="
report table "$TERN_VERSION" "$TARGET_S" "$SECONDS"
echo
echo "elapsed: ${SECONDS} s; run folders, logs and gpu_train.json: $OUT/"
