"""What the PyTorch peers of tern's training benchmarks share: bench/torch_mlp.py (CPU,
bench/cpu_train.sh) and bench/torch_gpu_mlp.py (one CUDA GPU, bench/gpu_train.sh), and the
report helper of bench/gpu_train.sh (parse_tern_ini, layer_specs, spec_params).

- tern INI files: parse_tern_ini, and the layers of a tern config as the peers' --layers spec
  ("linear:128,relu,dropout:0.1,linear:10"; also gelu, tanh, layernorm[:eps], linear:N:nobias,
  and the convolutional layers: reshape:CxHxW, conv2d:OUT:K:STRIDE:PAD[:nobias],
  batchnorm:EPS:MOMENTUM, maxpool2d:K:STRIDE, avgpool2d:K:STRIDE, flatten). config_params counts
  a config's trained parameters, language models (embedding, transformer_block, tied output
  layer) included; lm_flops_per_token is the nanoGPT/PaLM estimate 6N + 12 L T C.
- The command-line arguments both peers accept (add_source_args, add_training_args,
  add_timing_args) and their settings (resolve): an explicit flag overrides the --tern-config
  key, which overrides the default.
- The model (build_model: Linear / ReLU / Dropout / GELU(tanh) / Tanh / LayerNorm, and
  reshape / Conv2d / BatchNorm / MaxPool2d / AvgPool2d / Flatten for convolutional configs), the
  optimizer (make_optimizer: AdamW or SGD with momentum, weight decay on Linear weights only, as
  tern does for biases and norms) and tern's LR schedule (make_scheduler: linear warmup, then
  cosine/linear decay to lr * min_lr_ratio); backward_and_update ends a training step (backward,
  clipping, optimizer and schedule steps).
- The data: load_train_split reads /train/x (float32) and /train/y (int32) of an HDF5 file and
  standardises the features like tern's data.normalize=standard; EpochBatches draws batches from a
  per-epoch random permutation, wrapping into the next epoch like tern's loader.
- The timing: timed_intervals runs the timed steps in intervals and reports the median of the
  per-interval throughputs, the estimator bench/cpu_train.sh and bench/gpu_train.sh apply to
  tern's metrics.jsonl. optim_fields and timing_fields are the parts of the peers' JSON line
  they have in common.

Only the standard library is imported at module level (torch, numpy and h5py inside the functions
that need them), so bench/gpu_train.sh's report helper can import this module with a plain python3.
"""
import math
import statistics
import time
from types import SimpleNamespace


# ---- tern INI files and layer specs ---------------------------------------------------------------

def parse_tern_ini(path):
    """The keys the peers need from a tern INI file ('layer' repeats, so no configparser)."""
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
    if kind == "reshape":
        return f"reshape:{args['to']}"
    if kind == "conv2d":
        spec = f"conv2d:{args['out']}:{args['k']}:{args.get('stride', '1')}:{args.get('pad', '0')}"
        return spec + ("" if args.get("bias", "true") in ("true", "1", "yes") else ":nobias")
    if kind == "batchnorm":
        return f"batchnorm:{args.get('eps', '1e-5')}:{args.get('momentum', '0.1')}"
    if kind in ("maxpool2d", "avgpool2d"):
        return f"{kind}:{args['k']}:{args.get('stride', args['k'])}"
    return kind


def layer_specs(ini):
    """The layers of a parsed tern config as one --layers spec ('' when it has none)."""
    return ",".join(tern_layer_to_spec(l) for l in ini.get("layers", []))


def spec_shapes(layers, in_dim):
    """[(parts, input shape, parameters)] for each layer of a --layers spec on in_dim features:
    the per-sample shapes the layers see and their trained parameters (Linear / Conv2d weights
    and biases, LayerNorm / BatchNorm weights and biases; not batch norm's running statistics)."""
    shape, out = (in_dim,), []
    for spec in layers.split(","):
        parts = spec.strip().split(":")
        kind, n, new = parts[0], 0, shape
        nobias = parts[-1] == "nobias"
        if kind == "linear":
            o = int(parts[1])
            n = shape[-1] * o + (0 if nobias else o)
            new = shape[:-1] + (o,)
        elif kind == "layernorm":
            n = 2 * shape[-1]
        elif kind == "reshape":
            new = tuple(int(d) for d in parts[1].split("x"))
        elif kind == "flatten":
            new = (math.prod(shape),)
        elif kind == "conv2d":
            o, k, stride, pad = (int(v) for v in parts[1:5])
            n = o * shape[0] * k * k + (0 if nobias else o)
            new = (o, (shape[1] + 2 * pad - k) // stride + 1, (shape[2] + 2 * pad - k) // stride + 1)
        elif kind == "batchnorm":
            n = 2 * shape[0]
        elif kind in ("maxpool2d", "avgpool2d"):
            k = int(parts[1])
            stride = int(parts[2]) if len(parts) > 2 else k
            new = (shape[0], (shape[1] - k) // stride + 1, (shape[2] - k) // stride + 1)
        out.append((parts, shape, n))
        shape = new
    return out


def spec_params(layers, in_dim):
    """Trained parameters of a --layers spec on in_dim features (see spec_shapes)."""
    return sum(n for _, _, n in spec_shapes(layers, in_dim))


def tern_layer_args(text):
    """'transformer_block heads=6' -> ('transformer_block', {'heads': '6'})."""
    kind, *rest = text.split()
    return kind, dict(p.split("=", 1) for p in rest)


def config_params(ini):
    """Trained parameters of a parsed tern config: the --layers spec's (spec_params) for vector
    and image models; for language models (an embedding layer first) token table V x C +
    position table T x C (T = data.block_size), per transformer_block 12 C^2 + 4 C (qkv 3C^2,
    proj C^2, fc and its projection 8 C^2, two layer norms 4 C; + 9 C with bias=true), layernorm
    2 C, linear C x out (+ out bias; tie=embedding: no weight of its own)."""
    layers = ini.get("layers", [])
    if not layers or tern_layer_args(layers[0])[0] != "embedding":
        return spec_params(layer_specs(ini), int(ini.get("model.input_dim", 0)))
    t, width, n = int(ini.get("data.block_size", 0)), 0, 0
    yes = lambda v: v in ("true", "1", "yes")
    for text in layers:
        kind, a = tern_layer_args(text)
        if kind == "embedding":
            width = int(a["dim"])
            n += int(a["vocab"]) * width + t * width
        elif kind == "transformer_block":
            n += 12 * width * width + 4 * width + (9 * width if yes(a.get("bias", "false")) else 0)
        elif kind == "attention":
            n += 4 * width * width + (4 * width if yes(a.get("bias", "true")) else 0)
        elif kind == "layernorm":
            n += 2 * width
        elif kind == "linear":
            o = int(a["out"])
            n += (0 if a.get("tie") else width * o) + (o if yes(a.get("bias", "true")) else 0)
            width = o
    return n


def lm_flops_per_token(ini):
    """Training FLOPs per token of a language-model config, nanoGPT's estimate_mfu (PaLM appendix
    B): 6 N + 12 L T C, N = config_params less the position table (it does no multiply),
    L = transformer blocks, T = data.block_size, C = the embedding width. Returns
    (flops, N, L, T, C)."""
    t = int(ini.get("data.block_size", 0))
    width, blocks = 0, 0
    for text in ini.get("layers", []):
        kind, a = tern_layer_args(text)
        if kind == "embedding":
            width = int(a["dim"])
        elif kind in ("transformer_block", "attention"):
            blocks += 1
    n = config_params(ini) - t * width
    return 6 * n + 12 * blocks * t * width, n, blocks, t, width


# ---- command-line arguments and settings ----------------------------------------------------------

def add_source_args(ap):
    """Where the settings and the data come from."""
    ap.add_argument("--tern-config", help="tern INI file to take model/optim/train/data settings from")
    ap.add_argument("--data", help="HDF5 file (/train/x, /train/y)")


def add_training_args(ap):
    """Model, data normalisation, batch, optimizer, LR schedule and seed (default: --tern-config)."""
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


def add_timing_args(ap, warmup_seconds=False):
    """Untimed warm-up, timed steps or seconds, interval length (and --warmup-seconds if asked)."""
    ap.add_argument("--warmup", type=int, default=50, help="untimed steps before timing")
    if warmup_seconds:
        ap.add_argument("--warmup-seconds", type=float, default=0.0,
                        help="end the warm-up early once this many seconds have passed (0: off)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0: use --seconds)")
    ap.add_argument("--seconds", type=float, default=10.0, help="time budget when --steps is 0")
    ap.add_argument("--interval", type=int, default=0,
                    help="steps per throughput interval (0: about 0.25 s worth, from the warmup)")


# --mode: how the model runs. "compile" is torch.compile's default mode; "max-autotune" also
# autotunes the kernels and captures CUDA graphs, the mode meant for launch-bound models.
COMPILE_MODES = {"eager": None, "compile": "default", "max-autotune": "max-autotune"}


def add_mode_args(ap):
    ap.add_argument("--mode", choices=list(COMPILE_MODES), default="eager",
                    help="eager; compile: torch.compile(model) (default mode); max-autotune: "
                         "torch.compile(model, mode='max-autotune') (autotuned kernels, CUDA graphs)")


def compiled(torch, model, mode):
    """The model as --mode runs it (the loss and the optimizer stay eager in every mode)."""
    return model if COMPILE_MODES[mode] is None else torch.compile(model, mode=COMPILE_MODES[mode])


def add_denormal_args(ap):
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True): denormal floats flushed to zero, as tern "
                         "does by default (run.flush_denormals); off by default, PyTorch's default")


def pick(args, ini, flag, key, default, conv):
    """The explicit flag if given, else conv(the tern INI key) if present, else the default."""
    v = getattr(args, flag)
    if v is not None:
        return v
    if key in ini:
        return conv(ini[key])
    return default


def truthy(s):
    return s.strip().lower() in ("true", "1", "yes")


def resolve(args, ini):
    """The settings of add_source_args, add_training_args and add_timing_args, flags over ini.
    layers is '' and data_path None when neither gives them (the peers report that)."""
    p = lambda flag, key, default, conv: pick(args, ini, flag, key, default, conv)
    return SimpleNamespace(
        data_path=p("data", "data.path", None, str),
        layers=args.layers or layer_specs(ini),
        normalize=p("normalize", "data.normalize", "standard", str),
        batch=p("batch", "train.batch_size", 64, int),
        opt_name=p("optimizer", "optim.name", "adamw", str),
        lr=p("lr", "optim.lr", 1e-3, float),
        beta1=p("beta1", "optim.beta1", 0.9, float),
        beta2=p("beta2", "optim.beta2", 0.999, float),
        eps=p("eps", "optim.eps", 1e-8, float),
        wd=p("weight_decay", "optim.weight_decay", 0.01, float),
        momentum=p("momentum", "optim.momentum", 0.9, float),
        nesterov=p("nesterov", "optim.nesterov", False, truthy),
        clip=p("clip_norm", "optim.clip_norm", 0.0, float),
        schedule=p("schedule", "optim.schedule", "cosine", str),
        lr_warmup=p("warmup_steps", "optim.warmup_steps", 0, int),
        min_lr_ratio=p("min_lr_ratio", "optim.min_lr_ratio", 0.0, float),
        seed=p("seed", "train.seed", 1234, int),
        # steps the LR schedule spans: --train-steps, train.steps, else all the steps of this run
        total_steps=args.train_steps or int(ini.get("train.steps", 0)) or (args.warmup + (args.steps or 10**6)),
    )


# ---- data ---------------------------------------------------------------------------------------

def load_train_split(path, normalize):
    """(x float32 [rows, features], y int64 [rows]) CPU tensors of an HDF5 file's /train split."""
    import h5py
    import numpy as np
    import torch

    with h5py.File(path, "r") as f:
        x_np = np.asarray(f["/train/x"], dtype=np.float32)
        y_np = np.asarray(f["/train/y"]).astype(np.int64)
    x_np = x_np.reshape(x_np.shape[0], -1)
    if normalize == "standard":
        # tern: per-feature mean and population std of the training split, std <= 1e-12 -> 1.
        mean = x_np.astype(np.float64).mean(axis=0)
        std = x_np.astype(np.float64).std(axis=0)
        inv = np.where(std > 1e-12, 1.0 / np.where(std > 1e-12, std, 1.0), 1.0)
        x_np = ((x_np - mean.astype(np.float32)) * inv.astype(np.float32)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x_np)), torch.from_numpy(y_np)


class EpochBatches:
    """Calling it returns the next (x, y) batch: rows of a per-epoch random permutation (made on
    x's device from seed), wrapping into the next epoch like tern's loader. The host only tracks
    the position."""

    def __init__(self, x, y, batch, seed, device="cpu"):
        import torch

        self.torch, self.x, self.y, self.batch, self.device = torch, x, y, batch, device
        self.rows = x.shape[0]
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.perm, self.pos = self._permutation(), 0

    def _permutation(self):
        return self.torch.randperm(self.rows, device=self.device, generator=self.gen)

    def __call__(self):
        idx_parts, need = [], self.batch
        while need:
            take = min(need, self.rows - self.pos)
            idx_parts.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
            if self.pos == self.rows:
                self.perm, self.pos = self._permutation(), 0
        idx = idx_parts[0] if len(idx_parts) == 1 else self.torch.cat(idx_parts)
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


# ---- model, optimizer, schedule -----------------------------------------------------------------

def build_model(layers, in_dim, error):
    """nn.Sequential of a --layers spec on in_dim features, in train mode (parameters on torch's
    current default device), and the parameters with and without weight decay: Linear and Conv2d
    weights decay; biases, LayerNorm and BatchNorm parameters do not (tern's choice).
    error(message) reports an unknown layer. Shapes follow spec_shapes: reshape is a view to
    [N, C, H, W], batchnorm is BatchNorm2d on images and BatchNorm1d otherwise (tern normalises
    over the first per-sample dimension), pooling has no padding."""
    import torch.nn as nn

    class Reshape(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.shape = shape

        def forward(self, x):
            return x.reshape(x.shape[0], *self.shape)

    mods, decay, no_decay = [], [], []
    for parts, shape, _ in spec_shapes(layers, in_dim):
        kind = parts[0]
        width = shape[-1]
        if kind == "linear":
            out = int(parts[1])
            bias = not (len(parts) > 2 and parts[2] == "nobias")
            m = nn.Linear(width, out, bias=bias)
            decay.append(m.weight)
            if bias:
                no_decay.append(m.bias)
        elif kind == "conv2d":
            out, k, stride, pad = (int(v) for v in parts[1:5])
            bias = parts[-1] != "nobias"
            m = nn.Conv2d(shape[0], out, k, stride=stride, padding=pad, bias=bias)
            decay.append(m.weight)
            if bias:
                no_decay.append(m.bias)
        elif kind == "batchnorm":
            eps = float(parts[1]) if len(parts) > 1 else 1e-5
            momentum = float(parts[2]) if len(parts) > 2 else 0.1
            norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            m = norm(shape[0], eps=eps, momentum=momentum)
            no_decay += [m.weight, m.bias]
        elif kind in ("maxpool2d", "avgpool2d"):
            k = int(parts[1])
            stride = int(parts[2]) if len(parts) > 2 else k
            m = (nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d)(k, stride=stride)
        elif kind == "reshape":
            m = Reshape(tuple(int(d) for d in parts[1].split("x")))
        elif kind == "flatten":
            m = nn.Flatten()
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
            error(f"unknown layer '{':'.join(parts)}'")
        mods.append(m)
    model = nn.Sequential(*mods)
    model.train()
    return model, decay, no_decay


def make_optimizer(cfg, decay, no_decay, **kwargs):
    """AdamW or SGD (cfg.opt_name) with weight decay cfg.wd on decay only; kwargs go to torch's
    optimizer (e.g. fused=True). Empty parameter groups are left out."""
    import torch

    groups = [{"params": decay, "weight_decay": cfg.wd}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.opt_name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kwargs)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kwargs)


def make_scheduler(opt, cfg):
    """tern's schedule as a LambdaLR: linear warmup to lr over cfg.lr_warmup steps, then
    cosine/linear decay to lr * min_lr_ratio at step cfg.total_steps (or constant)."""
    import torch

    lr_warmup, total_steps, min_lr_ratio = cfg.lr_warmup, cfg.total_steps, cfg.min_lr_ratio

    def lr_factor(step):
        if step < lr_warmup:
            return (step + 1) / lr_warmup
        decay_steps = total_steps - lr_warmup
        if cfg.schedule == "constant" or decay_steps <= 1:
            return 1.0
        p = min(max((step - lr_warmup) / (decay_steps - 1), 0.0), 1.0)
        if cfg.schedule == "linear":
            return 1.0 + p * (min_lr_ratio - 1.0)
        return min_lr_ratio + 0.5 * (1.0 + math.cos(math.pi * p)) * (1.0 - min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def backward_and_update(loss, params, clip, opt, sched):
    """The end of a training step: backward, global-norm gradient clipping to clip (0: off),
    optimizer step, LR schedule step. Returns loss."""
    import torch

    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    sched.step()
    return loss


# ---- timing -------------------------------------------------------------------------------------

def auto_interval(seconds_per_step):
    """Steps per interval when --interval is 0: about 0.25 s worth."""
    return max(1, int(0.25 / max(seconds_per_step, 1e-7)))


def timed_intervals(step, batch, interval, steps, seconds, sync=None):
    """Runs step() in intervals of `interval` steps until `steps` timed steps (or, when steps is 0,
    whole intervals until `seconds` have passed), calling sync() (if given) at each interval's end,
    the only point the host waits. Returns loss (the last step's), rates (samples/s of each
    interval), timed_steps, timed_seconds, samples_per_sec (the median of rates) and
    samples_per_sec_overall (timed samples / timed seconds)."""
    rates, timed_steps = [], 0
    start = time.perf_counter()
    t_int = start
    while True:
        for _ in range(interval):
            loss = step()
        if sync is not None:
            sync()
        timed_steps += interval
        now = time.perf_counter()
        rates.append(interval * batch / (now - t_int))
        t_int = now
        if steps and timed_steps >= steps:
            break
        if not steps and now - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    return SimpleNamespace(loss=loss, rates=rates, timed_steps=timed_steps, timed_seconds=elapsed,
                           samples_per_sec=statistics.median(rates),
                           samples_per_sec_overall=timed_steps * batch / elapsed)


# ---- the peers' JSON line -----------------------------------------------------------------------

def optim_fields(cfg):
    """The optimizer part of a peer's JSON line."""
    return {"optimizer": cfg.opt_name, "lr": cfg.lr, "betas": [cfg.beta1, cfg.beta2], "eps": cfg.eps,
            "weight_decay": cfg.wd, "clip_norm": cfg.clip}


def timing_fields(warm_steps, interval, run):
    """The timing part of a peer's JSON line; run is what timed_intervals returned."""
    return {"warmup_steps": warm_steps, "timed_steps": run.timed_steps, "interval_steps": interval,
            "intervals": len(run.rates), "timed_seconds": run.timed_seconds,
            "samples_per_sec": run.samples_per_sec,
            "samples_per_sec_overall": run.samples_per_sec_overall}
