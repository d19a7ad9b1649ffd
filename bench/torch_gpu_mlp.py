#!/usr/bin/env python3
"""PyTorch peer of a tern MLP or CNN training run on one CUDA GPU, for bench/gpu_train.sh.

The model, optimizer and schedule are those of bench/torch_mlp.py (the CPU peer), from the module
both import, bench/tern_peer.py (which also holds the INI parsing, the arguments both accept, the
data loading, the batches and the interval timing): the layers of a tern config (Linear / ReLU /
Dropout / GELU(tanh) / Tanh / LayerNorm, and for convolutional configs such as
configs/digits_cnn.ini reshape / Conv2d / BatchNorm2d / MaxPool2d / AvgPool2d / Flatten), AdamW
or SGD with momentum and weight decay on Linear and Conv2d weights only (tern does not decay
biases and norms), tern's warmup + cosine/linear LR schedule
(LambdaLR), global-norm gradient clipping, and the features of the HDF5 file (/train/x float32,
/train/y int32) standardised like tern's data.normalize=standard. Everything runs on the GPU:

- The whole training set is copied to the GPU once, before timing, and each batch is gathered
  there (index_select) with indices from a per-epoch random permutation made on the GPU, wrapping
  into the next epoch like tern's loader. The peer is therefore never data-bound: no host work,
  no host-to-device copy per step. (tern's loader is part of what tern's figure measures.)
- --synthetic ROWS replaces the file by ROWS random-normal rows (--input-dim features, not
  normalised) with uniform random labels (--classes), generated on the GPU from --seed: the
  GEMM-bound model of bench/gpu_train.sh needs no file.
- --mode eager: plain eager steps. --mode compile: torch.compile(model) in the default mode (the
  forward and backward of the layers; the loss stays eager, as in --mode eager). --mode
  max-autotune: torch.compile(model, mode="max-autotune"): autotuned kernels and CUDA graphs, the
  mode for launch-bound models (its compilation takes minutes; it is untimed warm-up).
  In every mode the optimizer step is torch's fused AdamW (fused=True: one multi-tensor CUDA
  kernel for all parameters, the fastest AdamW PyTorch ships, and what a tuned PyTorch job uses;
  it is not compiled, so both modes share the same optimizer and differ only in the layers).
  tern's optimizer is likewise one fused pass over its flat buffers. SGD uses fused=True too.
- --precision fp32: fp32 throughout; TF32 in fp32 matmuls and cuDNN convolutions only with
  --tf32 (off by default, like tern's run.tf32=false). cuDNN picks its convolution algorithms by
  benchmarking (torch.backends.cudnn.benchmark = True, what a tuned job sets; tern uses cuDNN's
  deterministic algorithms). --precision bf16: torch.autocast(device_type='cuda',
  dtype=torch.bfloat16) around forward and loss; parameters, gradients and AdamW state stay
  fp32 (fp32 master weights), which is what tern's run.precision=bf16 does. The loss
  (cross_entropy) runs in fp32 under autocast.

A step is: zero_grad(set_to_none=True), gather a batch, forward, cross_entropy, backward,
(clip), optimizer step, LR schedule step. Nothing in the loop reads a value back to the host.

Timing: --warmup untimed steps (they include torch.compile's compilation), then --steps timed
steps (or, with --seconds, whole intervals until that many seconds have passed), in intervals of
--interval steps. The host waits for the GPU (torch.cuda.synchronize) only at interval
boundaries, so the GPU queue stays full within an interval. Prints one JSON line:
  samples_per_sec          median of the per-interval throughputs, the estimator
                           bench/gpu_train.sh applies to tern's metrics.jsonl
  samples_per_sec_overall  timed samples / timed wall seconds
  steps_per_sec            samples_per_sec / batch
plus mode, precision, device name, parameter count, first-step seconds and peak GPU memory.

--gemm-rate instead measures the bf16 GEMM rate cuBLAS reaches alone: torch.matmul of random
bf16 n x n matrices for n = 4096 and 8192, each timed by CUDA events after a warm-up, rotating
among 3 input sets (so no run finds its inputs in L2 from the run before), the median of 30
runs; prints {"gemm_tflops_4096": ..., "gemm_tflops_8192": ...} (2 n^3 / time).

The model and optimizer come from --tern-config (a tern INI file) when given; every explicit flag
overrides it. Layers on the command line: --layers "linear:128,relu,dropout:0.1,linear:10"
(also gelu, tanh, layernorm[:eps], and reshape:CxHxW, conv2d:OUT:K:STRIDE:PAD[:nobias],
batchnorm[:EPS[:MOMENTUM]], maxpool2d:K[:STRIDE], avgpool2d:K[:STRIDE], flatten: see
bench/tern_peer.py).
"""
import argparse
import json
import statistics
import sys
import time

import tern_peer as tp


def set_tf32(torch, on):
    """TF32 in fp32 matmuls and cuDNN convolutions on or off. PyTorch >= 2.9 has fp32_precision
    and warns about the legacy allow_tf32 flags (torch.compile reads the new ones), so use them
    where they exist."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32" if on else "ieee"
    else:
        matmul.allow_tf32 = on
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = on


def gemm_rate(torch, device, sizes):
    """bf16 GEMM TFLOP/s of torch.matmul (cuBLAS) alone, median of 30 timed runs per size."""
    cuda = device.type == "cuda"
    out = {}
    for n in sizes:
        gen = torch.Generator(device=device).manual_seed(n)
        sets = [(torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen),
                 torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)) for _ in range(3)]
        c = torch.empty(n, n, device=device, dtype=torch.bfloat16)
        # Warm-up: at least 10 runs and 0.5 s, so clocks and cuBLAS's heuristics have settled.
        t0, i = time.perf_counter(), 0
        while i < 10 or time.perf_counter() - t0 < 0.5:
            a, b = sets[i % 3]
            torch.matmul(a, b, out=c)
            i += 1
            if cuda and i % 10 == 0:
                torch.cuda.synchronize()
        if cuda:
            torch.cuda.synchronize()
        times_ms = []
        if cuda:
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(30)]
            for i, (start, end) in enumerate(events):
                a, b = sets[i % 3]
                start.record()
                torch.matmul(a, b, out=c)
                end.record()
            torch.cuda.synchronize()
            times_ms = [start.elapsed_time(end) for start, end in events]
        else:  # the hidden --device cpu smoke test
            for i in range(30):
                a, b = sets[i % 3]
                t = time.perf_counter()
                torch.matmul(a, b, out=c)
                times_ms.append((time.perf_counter() - t) * 1e3)
        ms = statistics.median(times_ms)
        out[f"gemm_tflops_{n}"] = 2.0 * n ** 3 / (ms * 1e-3) / 1e12
        out[f"gemm_ms_{n}"] = ms
        del sets, c
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemm-rate", action="store_true",
                    help="measure the cuBLAS bf16 GEMM rate (4096^3 and 8192^3) and exit")
    ap.add_argument("--gemm-sizes", default="4096,8192", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke tests only
    tp.add_mode_args(ap)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--tf32", action="store_true", help="TF32 in fp32 matmuls (default off)")
    tp.add_source_args(ap)
    ap.add_argument("--synthetic", type=int, metavar="ROWS",
                    help="ROWS random-normal rows with random labels, made on the GPU (no file)")
    ap.add_argument("--input-dim", type=int, help="features (with --synthetic; default model.input_dim)")
    ap.add_argument("--classes", type=int, help="classes (with --synthetic; default: the last linear's out)")
    tp.add_training_args(ap)
    tp.add_timing_args(ap)
    args = ap.parse_args()

    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("torch_gpu_mlp.py: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 1
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        set_tf32(torch, args.tf32)
        torch.backends.cudnn.benchmark = True

    if args.gemm_rate:
        res = gemm_rate(torch, device, [int(s) for s in args.gemm_sizes.split(",")])
        res.update({"impl": "pytorch", "torch": torch.__version__, "device": device_name,
                    "op": "torch.matmul bf16 n x n @ n x n", "runs": 30, "input_sets": 3})
        print(json.dumps(res))
        return 0

    ini = tp.parse_tern_ini(args.tern_config) if args.tern_config else {}
    cfg = tp.resolve(args, ini)
    layers = cfg.layers
    if not layers:
        ap.error("need --layers (or --tern-config)")
    if not args.synthetic and not cfg.data_path:
        ap.error("need --data or --synthetic (or --tern-config with data.path)")
    normalize = cfg.normalize
    linear_outs = [int(s.split(":")[1]) for s in layers.split(",") if s.strip().startswith("linear")]

    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)

    # ---- data, on the device, before any timing -----------------------------------------------
    t_setup = time.perf_counter()
    if args.synthetic:
        in_dim = tp.pick(args, ini, "input_dim", "model.input_dim", 0, int)
        classes = args.classes or (linear_outs[-1] if linear_outs else 0)
        if in_dim <= 0 or classes < 2:
            ap.error("--synthetic needs --input-dim (or model.input_dim) and --classes (or a last linear layer)")
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        x_all = torch.randn(args.synthetic, in_dim, device=device, generator=gen)
        y_all = torch.randint(0, classes, (args.synthetic,), device=device, generator=gen)
        normalize = "none (synthetic)"
    else:
        x_all, y_all = (t.to(device) for t in tp.load_train_split(cfg.data_path, normalize))
        in_dim = x_all.shape[1]
        if args.input_dim and args.input_dim != in_dim:
            ap.error(f"--input-dim {args.input_dim} but {cfg.data_path} has {in_dim} features")
        classes = int(y_all.max()) + 1
    rows = x_all.shape[0]
    if args.classes and linear_outs and args.classes != linear_outs[-1]:
        ap.error(f"--classes {args.classes} but the last linear layer has {linear_outs[-1]} outputs")

    # ---- model and optimizer: fp32 parameters on the device -----------------------------------
    with torch.device(device):
        model, decay, no_decay = tp.build_model(layers, in_dim, ap.error)
    params = list(model.parameters())
    opt = tp.make_optimizer(cfg, decay, no_decay, fused=True)
    sched = tp.make_scheduler(opt, cfg)
    net = tp.compiled(torch, model, args.mode)
    bf16 = args.precision == "bf16"

    # ---- batches: a per-epoch permutation on the device; the host only tracks the position ----
    next_batch = tp.EpochBatches(x_all, y_all, cfg.batch, cfg.seed, device)

    def step():
        opt.zero_grad(set_to_none=True)
        xb, yb = next_batch()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(xb), yb)
        return tp.backward_and_update(loss, params, cfg.clip, opt, sched)

    sync()
    setup_s = time.perf_counter() - t_setup

    # ---- warm-up (includes compilation), then timed intervals ----------------------------------
    t0 = time.perf_counter()
    step()
    sync()
    first_step_s = time.perf_counter() - t0
    warm_steps = 1
    t1 = time.perf_counter()
    while warm_steps < max(args.warmup, 1):
        step()
        warm_steps += 1
    sync()
    interval = args.interval
    if interval <= 0:  # about 0.25 s per interval, from the warm-up steps after the first
        interval = tp.auto_interval((time.perf_counter() - t1) / max(warm_steps - 1, 1))

    run = tp.timed_intervals(step, cfg.batch, interval, args.steps, args.seconds, sync)

    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device_name,
        "mode": args.mode,
        "precision": args.precision,
        "tf32": bool(args.tf32),
        "cudnn_benchmark": bool(cuda and torch.backends.cudnn.benchmark),
        "fused_optimizer": True,
        "layers": layers,
        "input_dim": int(in_dim),
        "classes": int(classes),
        "rows": int(rows),
        "data": "synthetic" if args.synthetic else cfg.data_path,
        "normalize": normalize,
        "batch": cfg.batch,
        **tp.optim_fields(cfg),
        "schedule_steps": cfg.total_steps,
        "params": sum(p.numel() for p in params),
        "setup_seconds": setup_s,
        "first_step_seconds": first_step_s,
        **tp.timing_fields(warm_steps, interval, run),
        "steps_per_sec": run.samples_per_sec / cfg.batch,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        "train_loss_last": float(run.loss.detach()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
