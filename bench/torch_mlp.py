#!/usr/bin/env python3
"""PyTorch peer of a tern MLP training run, for the CPU throughput benchmarks (bench/cpu_train.sh).

Builds the same model as a tern config (Linear / ReLU / Dropout / GELU(tanh) / Tanh / LayerNorm),
the same optimizer (AdamW or SGD with momentum, weight decay on Linear weights only, as tern does
for biases and norms), the same learning-rate schedule and gradient clipping, reads the same HDF5
file (/train/x float32, /train/y int32) and standardises the features like tern's
data.normalize=standard. Each step draws a batch from a per-epoch random permutation (as tern's
loader does), then runs a plain eager step: zero_grad(set_to_none=True), forward, cross_entropy,
backward, (clip), optimizer step.

It times --steps steps (or, with --seconds, as many steps as fit) after --warmup steps and prints
one JSON line:
  samples_per_sec          median of the per-interval throughputs (--interval steps each), the
                           same estimator bench/cpu_train.sh applies to tern's metrics.jsonl
  samples_per_sec_overall  timed samples / timed wall seconds

The model and optimizer come from --tern-config (a tern INI file) when given; every explicit flag
overrides it. Layers on the command line: --layers "linear:128,relu,dropout:0.1,linear:10"
(also gelu, tanh, layernorm[:eps]).
"""
import argparse
import configparser
import json
import math
import statistics
import sys
import time


def parse_tern_ini(path):
    """The keys this peer needs from a tern INI file ('layer' repeats, so no configparser)."""
    out = {"layers": []}
    section = None
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            if "=" not in line:
                continue
            key, value = (s.strip() for s in line.split("=", 1))
            if section == "model" and key == "layer":
                out["layers"].append(value)
            else:
                out[f"{section}.{key}"] = value
    return out


def tern_layer_to_spec(text):
    """'linear out=128' -> 'linear:128'; 'dropout p=0.1' -> 'dropout:0.1'."""
    parts = text.split()
    kind, args = parts[0], dict(p.split("=", 1) for p in parts[1:])
    if kind == "linear":
        if args.get("bias", "true") not in ("true", "1", "yes"):
            return f"linear:{args['out']}:nobias"
        return f"linear:{args['out']}"
    if kind == "dropout":
        return f"dropout:{args.get('p', '0.1')}"
    if kind == "layernorm":
        return f"layernorm:{args.get('eps', '1e-5')}"
    return kind


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tern-config", help="tern INI file to take model/optim/train/data settings from")
    ap.add_argument("--data", help="HDF5 file (/train/x, /train/y)")
    ap.add_argument("--layers", help='e.g. "linear:128,relu,dropout:0.1,linear:128,relu,linear:10"')
    ap.add_argument("--normalize", choices=["standard", "none"])
    ap.add_argument("--batch", type=int, help="global batch size")
    ap.add_argument("--optimizer", choices=["adamw", "sgd"])
    ap.add_argument("--lr", type=float)
    ap.add_argument("--beta1", type=float)
    ap.add_argument("--beta2", type=float)
    ap.add_argument("--eps", type=float)
    ap.add_argument("--weight-decay", type=float)
    ap.add_argument("--momentum", type=float)
    ap.add_argument("--nesterov", action="store_true", default=None)
    ap.add_argument("--clip-norm", type=float, help="0 = off")
    ap.add_argument("--schedule", choices=["cosine", "linear", "constant"])
    ap.add_argument("--warmup-steps", type=int, help="LR warmup steps (the schedule, not timing)")
    ap.add_argument("--min-lr-ratio", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--train-steps", type=int,
                    help="steps the LR schedule spans (tern's train.steps; default from --tern-config)")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True) (off by default, like tern)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--warmup", type=int, default=50, help="untimed steps before timing")
    ap.add_argument("--warmup-seconds", type=float, default=0.0,
                    help="end the warm-up early once this many seconds have passed (0: off)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0: use --seconds)")
    ap.add_argument("--seconds", type=float, default=10.0, help="time budget when --steps is 0")
    ap.add_argument("--interval", type=int, default=0,
                    help="steps per throughput interval (0: about 0.25 s worth, from the warmup)")
    args = ap.parse_args()

    ini = parse_tern_ini(args.tern_config) if args.tern_config else {}

    def pick(flag, key, default, conv):
        v = getattr(args, flag)
        if v is not None:
            return v
        if key in ini:
            return conv(ini[key])
        return default

    truthy = lambda s: s.strip().lower() in ("true", "1", "yes")
    data_path = pick("data", "data.path", None, str)
    layers = args.layers or ",".join(tern_layer_to_spec(l) for l in ini.get("layers", []))
    if not data_path or not layers:
        ap.error("need --data and --layers (or --tern-config)")
    normalize = pick("normalize", "data.normalize", "standard", str)
    batch = pick("batch", "train.batch_size", 64, int)
    opt_name = pick("optimizer", "optim.name", "adamw", str)
    lr = pick("lr", "optim.lr", 1e-3, float)
    beta1 = pick("beta1", "optim.beta1", 0.9, float)
    beta2 = pick("beta2", "optim.beta2", 0.999, float)
    eps = pick("eps", "optim.eps", 1e-8, float)
    wd = pick("weight_decay", "optim.weight_decay", 0.01, float)
    momentum = pick("momentum", "optim.momentum", 0.9, float)
    nesterov = pick("nesterov", "optim.nesterov", False, truthy)
    clip = pick("clip_norm", "optim.clip_norm", 0.0, float)
    schedule = pick("schedule", "optim.schedule", "cosine", str)
    lr_warmup = pick("warmup_steps", "optim.warmup_steps", 0, int)
    min_lr_ratio = pick("min_lr_ratio", "optim.min_lr_ratio", 0.0, float)
    seed = pick("seed", "train.seed", 1234, int)

    import h5py
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(seed)
    if args.flush_denormal:
        torch.set_flush_denormal(True)

    with h5py.File(data_path, "r") as f:
        x_np = np.asarray(f["/train/x"], dtype=np.float32)
        y_np = np.asarray(f["/train/y"]).astype(np.int64)
    x_np = x_np.reshape(x_np.shape[0], -1)
    if normalize == "standard":
        # tern: per-feature mean and population std of the training split, std <= 1e-12 -> 1.
        mean = x_np.astype(np.float64).mean(axis=0)
        std = x_np.astype(np.float64).std(axis=0)
        inv = np.where(std > 1e-12, 1.0 / np.where(std > 1e-12, std, 1.0), 1.0)
        x_np = ((x_np - mean.astype(np.float32)) * inv.astype(np.float32)).astype(np.float32)
    x_all = torch.from_numpy(np.ascontiguousarray(x_np))
    y_all = torch.from_numpy(y_np)
    rows, in_dim = x_all.shape

    mods, decay, no_decay = [], [], []
    width = in_dim
    for spec in layers.split(","):
        parts = spec.strip().split(":")
        kind = parts[0]
        if kind == "linear":
            out = int(parts[1])
            bias = not (len(parts) > 2 and parts[2] == "nobias")
            m = nn.Linear(width, out, bias=bias)
            decay.append(m.weight)
            if bias:
                no_decay.append(m.bias)
            width = out
        elif kind == "relu":
            m = nn.ReLU()
        elif kind == "gelu":
            m = nn.GELU(approximate="tanh")
        elif kind == "tanh":
            m = nn.Tanh()
        elif kind == "dropout":
            m = nn.Dropout(float(parts[1]) if len(parts) > 1 else 0.1)
        elif kind == "layernorm":
            m = nn.LayerNorm(width, eps=float(parts[1]) if len(parts) > 1 else 1e-5)
            no_decay += [m.weight, m.bias]
        else:
            ap.error(f"unknown layer '{spec}'")
        mods.append(m)
    model = nn.Sequential(*mods)
    model.train()
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if opt_name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)

    # tern's schedule: linear warmup to lr, then cosine/linear decay to lr*min_lr_ratio at the end.
    total_steps = [args.train_steps or int(ini.get("train.steps", 0)) or (args.warmup + (args.steps or 10**6))]

    def lr_factor(step):
        if step < lr_warmup:
            return (step + 1) / lr_warmup
        decay_steps = total_steps[0] - lr_warmup
        if schedule == "constant" or decay_steps <= 1:
            return 1.0
        p = min(max((step - lr_warmup) / (decay_steps - 1), 0.0), 1.0)
        if schedule == "linear":
            return 1.0 + p * (min_lr_ratio - 1.0)
        return min_lr_ratio + 0.5 * (1.0 + math.cos(math.pi * p)) * (1.0 - min_lr_ratio)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    params = [p for p in model.parameters()]

    gen = torch.Generator().manual_seed(seed)
    state = {"perm": torch.randperm(rows, generator=gen), "pos": 0}

    def next_batch():
        # Batches walk a per-epoch random permutation, wrapping into the next epoch like tern's loader.
        idx_parts, need = [], batch
        while need:
            take = min(need, rows - state["pos"])
            idx_parts.append(state["perm"][state["pos"]:state["pos"] + take])
            state["pos"] += take
            need -= take
            if state["pos"] == rows:
                state["perm"], state["pos"] = torch.randperm(rows, generator=gen), 0
        idx = idx_parts[0] if len(idx_parts) == 1 else torch.cat(idx_parts)
        return x_all.index_select(0, idx), y_all.index_select(0, idx)

    last_loss = [0.0]

    def step():
        xb, yb = next_batch()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        return loss

    t0 = time.perf_counter()
    warm_steps = 0
    while warm_steps < args.warmup:
        loss = step()
        warm_steps += 1
        if args.warmup_seconds > 0 and warm_steps >= 5 and time.perf_counter() - t0 >= args.warmup_seconds:
            break
    warm_s = time.perf_counter() - t0
    interval = args.interval
    if interval <= 0:
        per_step = warm_s / max(warm_steps, 1)
        interval = max(1, int(0.25 / max(per_step, 1e-7)))

    rates, timed_steps = [], 0
    start = time.perf_counter()
    t_int = start
    while True:
        for _ in range(interval):
            loss = step()
        timed_steps += interval
        now = time.perf_counter()
        rates.append(interval * batch / (now - t_int))
        t_int = now
        if args.steps and timed_steps >= args.steps:
            break
        if not args.steps and now - start >= args.seconds:
            break
    elapsed = time.perf_counter() - start
    last_loss[0] = float(loss.detach())

    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "layers": layers,
        "input_dim": int(in_dim),
        "rows": int(rows),
        "batch": batch,
        "optimizer": opt_name,
        "lr": lr, "betas": [beta1, beta2], "eps": eps, "weight_decay": wd,
        "clip_norm": clip,
        "flush_denormal": bool(args.flush_denormal),
        "params": sum(p.numel() for p in params),
        "warmup_steps": warm_steps,
        "timed_steps": timed_steps,
        "interval_steps": interval,
        "intervals": len(rates),
        "timed_seconds": elapsed,
        "samples_per_sec": statistics.median(rates),
        "samples_per_sec_overall": timed_steps * batch / elapsed,
        "train_loss_last": last_loss[0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
