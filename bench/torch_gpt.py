#!/usr/bin/env python3
"""PyTorch peer of a tern character-level GPT training run: on the CPU for bench/cpu_train.sh
(BENCH_MODELS=gpt), on one CUDA GPU for bench/gpu_train.sh (BENCH_MODELS=gpt).

  python3 bench/torch_gpt.py --tern-config configs/shakespeare_gpt.ini --threads 1 --steps 200
  python3 bench/torch_gpt.py --tern-config configs/shakespeare_gpt_gpu.ini --device cuda \\
      --precision bf16 --mode compile --warmup 50 --steps 200      # (--compile = --mode compile)

Builds the model of a tern config's layer list (embedding vocab=V dim=C: token and position
embeddings; transformer_block heads=H [bias=false]: pre-norm, causal self-attention through
torch's F.scaled_dot_product_attention(is_causal=True), 4x GELU(tanh) MLP, residuals; layernorm;
linear out=V [bias=false] [tie=embedding]: tie=embedding makes the output layer's weight the
token table, as tern and nanoGPT do) and trains it like tern: AdamW with weight decay on the 2-D
weights and the embeddings only, tern's LR schedule and clipping (bench/tern_peer.py),
cross-entropy averaged over all positions, the same batch and context (data.block_size), on
windows of the same token file (/train/tokens of tern-data text) drawn at random (tern draws them
from a seeded permutation; the order does not change the cost of a step).

--device cpu (default): --threads intra-op threads, plain AdamW, windows gathered on the host.
--device cuda: the token file is copied to the GPU once and each step's windows are gathered
there (random starts from a GPU generator, no host work, no copy per step: the peer is never
data-bound); torch's fused AdamW (fused=True), not compiled; --mode compile wraps the model in
torch.compile (default mode; the loss stays eager), --mode max-autotune in torch.compile's
max-autotune mode (autotuned kernels, CUDA graphs); --flush-denormal flushes denormal floats to
zero (torch.set_flush_denormal), as tern does by default; --precision bf16 runs forward and loss under
torch.autocast(bfloat16) with fp32 parameters, gradients and AdamW state (fp32 master weights,
as tern's run.precision=bf16), so the attention is flash attention; TF32 stays off (--tf32 turns
it on). Nothing in the GPU loop reads a value back to the host.

Timing as the other peers (tern_peer.timed_intervals): --warmup untimed steps (torch.compile's
compilation included), then --steps timed steps (or --seconds) in intervals of --interval steps,
synchronising only at interval ends; the median of per-interval throughputs. Prints one JSON
line; samples_per_sec counts windows (x block_size = tokens_per_sec). On the GPU it also has what
bench/gpu_train.sh reads from bench/torch_gpu_mlp.py: steps_per_sec, first_step_seconds,
peak_memory_mb, device.
"""
import argparse
import json
import sys
import time

import tern_peer


def build_gpt(torch, layers, block):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self, c, heads, bias):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv, self.proj = nn.Linear(c, 3 * c, bias=bias), nn.Linear(c, c, bias=bias)
            self.fc, self.out = nn.Linear(c, 4 * c, bias=bias), nn.Linear(4 * c, c, bias=bias)

        def forward(self, x):
            n, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
            shape = (n, t, self.heads, c // self.heads)
            q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(n, t, c))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class Embedding(nn.Module):
        def __init__(self, vocab, dim):
            super().__init__()
            self.token = nn.Embedding(vocab, dim)
            nn.init.normal_(self.token.weight, std=0.02)  # tern's init (a tied output layer needs it)
            self.position = nn.Parameter(torch.randn(block, dim) * 0.02)

        def forward(self, ids):
            return self.token(ids) + self.position[: ids.shape[1]]

    mods, width, embedding = [], None, None
    for text in layers:
        kind, args = tern_peer.tern_layer_args(text)
        if kind == "embedding":
            width = int(args["dim"])
            embedding = Embedding(int(args["vocab"]), width)
            mods.append(embedding)
        elif kind == "transformer_block":
            mods.append(Block(width, int(args["heads"]), args.get("bias", "false") == "true"))
        elif kind == "layernorm":
            mods.append(nn.LayerNorm(width))
        elif kind == "linear":
            m = nn.Linear(width, int(args["out"]), bias=args.get("bias", "true") == "true")
            if args.get("tie"):
                if embedding is None or tuple(embedding.token.weight.shape) != tuple(m.weight.shape):
                    sys.exit(f"torch_gpt.py: '{text}' has no embedding of shape {tuple(m.weight.shape)} to tie to")
                m.weight = embedding.token.weight  # one parameter, both layers' gradients
            mods.append(m)
            width = int(args["out"])
        else:
            sys.exit(f"torch_gpt.py: layer '{text}' is not part of this peer")
    model = nn.Sequential(*mods)
    params = list(model.parameters())  # a tied weight once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return model, decay, no_decay


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tern_peer.add_source_args(ap)
    tern_peer.add_training_args(ap)
    tern_peer.add_timing_args(ap)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    tern_peer.add_mode_args(ap)
    tern_peer.add_denormal_args(ap)
    ap.add_argument("--compile", dest="mode", action="store_const", const="compile",
                    help="same as --mode compile")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--tf32", action="store_true", help="TF32 in fp32 matmuls on the GPU (default off)")
    args = ap.parse_args()
    import h5py
    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("torch_gpt.py: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 1
    ini = tern_peer.parse_tern_ini(args.tern_config) if args.tern_config else {"layers": []}
    layers = ini["layers"]
    args.layers = args.layers or "gpt"  # the layer list is read here, not by tern_peer
    cfg = tern_peer.resolve(args, ini)
    block = int(ini.get("data.block_size", 0))
    if not layers or not cfg.data_path or block < 1:
        sys.exit("torch_gpt.py: needs --tern-config with model.layer lines, data.path and data.block_size")
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    if cuda:
        from torch_gpu_mlp import set_tf32

        set_tf32(torch, args.tf32)
    torch.manual_seed(cfg.seed)
    t_setup = time.perf_counter()
    with h5py.File(cfg.data_path, "r") as f:
        tokens = torch.from_numpy(f["/train/tokens"][:].astype("int64")).to(device)
    with torch.device(device):
        model, decay, no_decay = build_gpt(torch, layers, block)
    opt = tern_peer.make_optimizer(cfg, decay, no_decay, **({"fused": True} if cuda else {}))
    sched = tern_peer.make_scheduler(opt, cfg)
    params = decay + no_decay
    net = tern_peer.compiled(torch, model, args.mode)
    bf16 = args.precision == "bf16"
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    offsets = torch.arange(block, device=device)
    sync = torch.cuda.synchronize if cuda else None

    def step():
        start = torch.randint(len(tokens) - block - 1, (cfg.batch,), generator=gen, device=device)
        if cuda:  # one gather on the GPU
            idx = start[:, None] + offsets
            x, y = tokens[idx], tokens[idx + 1]
        else:
            x = torch.stack([tokens[s : s + block] for s in start])
            y = torch.stack([tokens[s + 1 : s + block + 1] for s in start])
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).float(), y.view(-1))
        loss = tern_peer.backward_and_update(loss, params, cfg.clip, opt, sched)
        return loss if cuda else loss.item()

    if sync:
        sync()
    setup_s = time.perf_counter() - t_setup
    t0 = time.perf_counter()
    step()  # the first step (compilation with --mode compile)
    if sync:
        sync()
    first_step_s = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step()
    interval = args.interval or 10
    run = tern_peer.timed_intervals(step, cfg.batch, interval, args.steps, args.seconds, sync)
    out = {"peer": "pytorch", "impl": "pytorch", "torch": torch.__version__, "threads": args.threads,
           "device": torch.cuda.get_device_name(device) if cuda else "cpu", "mode": args.mode,
           "precision": args.precision, "tf32": bool(args.tf32), "fused_optimizer": cuda,
           "flush_denormal": bool(args.flush_denormal),
           "layers": layers, "block_size": block, "batch": cfg.batch,
           "parameters": sum(p.numel() for p in params), "params": sum(p.numel() for p in params),
           "loss": float(run.loss), **tern_peer.optim_fields(cfg),
           "schedule_steps": cfg.total_steps, "setup_seconds": setup_s,
           "first_step_seconds": first_step_s,
           **tern_peer.timing_fields(max(args.warmup, 1), interval, run),
           "steps_per_sec": run.samples_per_sec / cfg.batch,
           "tokens_per_sec": run.samples_per_sec * block,
           "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
