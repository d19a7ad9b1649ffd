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

The INI parsing, the arguments and settings, data loading, batches, model, optimizer, schedule
and interval timing are bench/tern_peer.py's, shared with bench/torch_gpu_mlp.py.
"""
import argparse
import json
import sys
import time

import tern_peer as tp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tp.add_source_args(ap)
    tp.add_training_args(ap)
    tp.add_denormal_args(ap)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    tp.add_timing_args(ap, warmup_seconds=True)
    args = ap.parse_args()

    ini = tp.parse_tern_ini(args.tern_config) if args.tern_config else {}
    cfg = tp.resolve(args, ini)
    if not cfg.data_path or not cfg.layers:
        ap.error("need --data and --layers (or --tern-config)")

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(cfg.seed)
    if args.flush_denormal:
        torch.set_flush_denormal(True)

    x_all, y_all = tp.load_train_split(cfg.data_path, cfg.normalize)
    rows, in_dim = x_all.shape

    model, decay, no_decay = tp.build_model(cfg.layers, in_dim, ap.error)
    opt = tp.make_optimizer(cfg, decay, no_decay)
    sched = tp.make_scheduler(opt, cfg)
    params = [p for p in model.parameters()]
    next_batch = tp.EpochBatches(x_all, y_all, cfg.batch, cfg.seed)

    def step():
        xb, yb = next_batch()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        return tp.backward_and_update(loss, params, cfg.clip, opt, sched)

    t0 = time.perf_counter()
    warm_steps = 0
    while warm_steps < args.warmup:
        step()
        warm_steps += 1
        if args.warmup_seconds > 0 and warm_steps >= 5 and time.perf_counter() - t0 >= args.warmup_seconds:
            break
    warm_s = time.perf_counter() - t0
    interval = args.interval if args.interval > 0 else tp.auto_interval(warm_s / max(warm_steps, 1))

    run = tp.timed_intervals(step, cfg.batch, interval, args.steps, args.seconds)

    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "layers": cfg.layers,
        "input_dim": int(in_dim),
        "rows": int(rows),
        "batch": cfg.batch,
        **tp.optim_fields(cfg),
        "flush_denormal": bool(args.flush_denormal),
        "params": sum(p.numel() for p in params),
        **tp.timing_fields(warm_steps, interval, run),
        "train_loss_last": float(run.loss.detach()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
