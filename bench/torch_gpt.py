#!/usr/bin/env python3
"""PyTorch peer of a tern character-level GPT training run, for the CPU benchmark
(bench/cpu_train.sh, BENCH_MODELS=gpt).

Builds the model of a tern config's layer list (embedding vocab=V dim=C: token and position
embeddings; transformer_block heads=H [bias=false]: pre-norm, causal self-attention through
torch's scaled_dot_product_attention, 4x GELU(tanh) MLP, residuals; layernorm; linear out=V)
and trains it like tern: AdamW with weight decay on the 2-D weights and the embeddings only,
tern's LR schedule and clipping (bench/tern_peer.py), cross-entropy averaged over all positions,
the same batch and context (data.block_size), on windows of the same token file (/train/tokens of
tern-data text) drawn at random (tern draws them from a seeded permutation; the order does not
change the cost of a step). Timing as the other peers: median of per-interval throughputs after
an untimed warm-up. Prints one JSON line; samples_per_sec counts windows (x block_size = tokens).
"""
import argparse
import json
import sys

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
            self.position = nn.Parameter(torch.randn(block, dim) * 0.02)

        def forward(self, ids):
            return self.token(ids) + self.position[: ids.shape[1]]

    mods, width = [], None
    for text in layers:
        kind, *rest = text.split()
        args = dict(p.split("=", 1) for p in rest)
        if kind == "embedding":
            width = int(args["dim"])
            mods.append(Embedding(int(args["vocab"]), width))
        elif kind == "transformer_block":
            mods.append(Block(width, int(args["heads"]), args.get("bias", "false") == "true"))
        elif kind == "layernorm":
            mods.append(nn.LayerNorm(width))
        elif kind == "linear":
            mods.append(nn.Linear(width, int(args["out"]), bias=args.get("bias", "true") == "true"))
            width = int(args["out"])
        else:
            sys.exit(f"torch_gpt.py: layer '{text}' is not part of this peer")
    model = nn.Sequential(*mods)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return model, decay, no_decay


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tern_peer.add_source_args(ap)
    tern_peer.add_training_args(ap)
    tern_peer.add_timing_args(ap)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import h5py
    import torch

    ini = tern_peer.parse_tern_ini(args.tern_config) if args.tern_config else {"layers": []}
    layers = ini["layers"]
    args.layers = args.layers or "gpt"  # the layer list is read here, not by tern_peer
    cfg = tern_peer.resolve(args, ini)
    block = int(ini.get("data.block_size", 0))
    if not layers or not cfg.data_path or block < 1:
        sys.exit("torch_gpt.py: needs --tern-config with model.layer lines, data.path and data.block_size")
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    with h5py.File(cfg.data_path, "r") as f:
        tokens = torch.from_numpy(f["/train/tokens"][:].astype("int64"))
    model, decay, no_decay = build_gpt(torch, layers, block)
    opt = tern_peer.make_optimizer(cfg, decay, no_decay)
    sched = tern_peer.make_scheduler(opt, cfg)
    params = decay + no_decay
    gen = torch.Generator().manual_seed(cfg.seed)

    def step():
        start = torch.randint(len(tokens) - block - 1, (cfg.batch,), generator=gen)
        x = torch.stack([tokens[s : s + block] for s in start])
        y = torch.stack([tokens[s + 1 : s + block + 1] for s in start])
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        return tern_peer.backward_and_update(loss, params, cfg.clip, opt, sched).item()

    for _ in range(args.warmup):
        step()
    interval = args.interval or 10
    run = tern_peer.timed_intervals(step, cfg.batch, interval, args.steps, args.seconds)
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": args.threads,
                      "layers": layers, "block_size": block, "batch": cfg.batch,
                      "parameters": sum(p.numel() for p in params), "loss": run.loss,
                      **tern_peer.optim_fields(cfg), **tern_peer.timing_fields(args.warmup, interval, run),
                      "tokens_per_sec": run.samples_per_sec * block}))


if __name__ == "__main__":
    main()
