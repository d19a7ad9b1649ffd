#!/usr/bin/env python3
"""PyTorch peer of bench/attention_bench.cpp (tern_bench_attention), for bench/gpu_attention.sh:
causal attention alone through F.scaled_dot_product_attention(is_causal=True) with the flash
backend only (torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION)).

  python3 bench/torch_attention.py [--cases 8x256,8x1024,64x256] [--heads 6] [--head-dim 64]
                                   [--dtype bf16|fp32] [--seconds 0.05] [--reps 7]

The same shapes and inputs as tern's benchmark: per case BxT a packed qkv [B, T, 3C] (C = heads x
head-dim) as a GPT's qkv projection writes it, with q, k and v [B, H, T, D] views of it (the
transposes nanoGPT makes, no copy; flash attention takes them with their strides), normal(0, 1)
values; dout [B, H, T, D]. q, k and v are leaves that require gradients, so the forward is the
training forward (it keeps the log-sum-exp). Timed: forward (sdpa), backward alone
(torch.autograd.grad of one forward's output, retain_graph=True: dq, dk, dv) and forward +
backward. Each: a warm-up (10 calls and a probe of 5), then `reps` loops of back-to-back calls,
each about --seconds, timed by CUDA events recorded before the first and after the last call
(after a torch.cuda.synchronize), so, as in tern's benchmark, host launch costs count where the
host is the slower side; host_ms is the time the host took to queue the calls. Per call: the
median over the loops. TFLOP/s as tern's: forward 2 x 2 x B x H x T^2 x D / 2, backward 2.5x,
forward + backward 3.5x. Prints one JSON line per case.
--device cpu (with the math backend) is a smoke test of this script only.
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="8x256,8x1024,64x256", help="BxT,... (batch x context)")
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", choices=["bf16", "fp32", "f32"], default="bf16")
    ap.add_argument("--seconds", type=float, default=0.05, help="target seconds per timed loop")
    ap.add_argument("--reps", type=int, default=7, help="timed loops per measurement")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke test only
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("torch_attention.py: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 1
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    backend = SDPBackend.FLASH_ATTENTION if cuda else SDPBackend.MATH
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    h, d = args.heads, args.head_dim
    c = h * d

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def one_loop(fn, iters):
        """(ms per call, host ms per call) of `iters` back-to-back calls."""
        sync()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        host = time.perf_counter() - t0
        if cuda:
            end.record()
            end.synchronize()
            total_ms = start.elapsed_time(end)
        else:
            total_ms = (time.perf_counter() - t0) * 1e3
        return total_ms / iters, host * 1e3 / iters

    def time_calls(fn):
        for _ in range(10):
            fn()
        probe_ms = one_loop(fn, 5)[0]
        iters = int(min(max(args.seconds * 1e3 / max(probe_ms, 1e-4), 5), 20000))
        runs = [one_loop(fn, iters) for _ in range(args.reps)]
        return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), iters)

    for case in args.cases.split(","):
        b, t = (int(v) for v in case.lower().split("x"))
        gen = torch.Generator(device=device).manual_seed(b * 100003 + t)
        qkv = torch.randn(b, t, 3 * c, device=device, dtype=dtype, generator=gen)
        # [B, T, 3, H, D] -> three [B, H, T, D] views, leaves that require gradients
        q, k, v = (z.detach().requires_grad_() for z in qkv.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4))
        dout = torch.randn(b, h, t, d, device=device, dtype=dtype, generator=gen)
        with sdpa_kernel(backend):
            def fwd():
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            out = fwd()

            def bwd():
                return torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

            def both():
                return torch.autograd.grad(fwd(), (q, k, v), dout)

            tf = time_calls(fwd)
            tb = time_calls(bwd)
            tfb = time_calls(both)
        fwd_flop = 2.0 * 2.0 * b * h * t * t * d / 2.0
        tflops = lambda flop, ms: flop / (ms * 1e-3) / 1e12
        print(json.dumps({
            "impl": "pytorch", "torch": torch.__version__, "device": device_name,
            "backend": "flash" if cuda else "math (cpu smoke test)", "dtype": args.dtype,
            "causal": True, "batch": b, "seq": t, "heads": h, "head_dim": d,
            "fwd_ms": tf[0], "bwd_ms": tb[0], "fwdbwd_ms": tfb[0],
            "fwd_host_ms": tf[1], "bwd_host_ms": tb[1], "fwdbwd_host_ms": tfb[1],
            "iters": [tf[2], tb[2], tfb[2]], "reps": args.reps, "fwd_flop": fwd_flop,
            "fwd_tflops": tflops(fwd_flop, tf[0]), "bwd_tflops": tflops(2.5 * fwd_flop, tb[0]),
            "fwdbwd_tflops": tflops(3.5 * fwd_flop, tfb[0])}), flush=True)
        del q, k, v, qkv, dout, out
    return 0


if __name__ == "__main__":
    sys.exit(main())
