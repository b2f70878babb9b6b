"""Throughput of a vitlab model against the same architecture elsewhere (``vitlab bench``).

One process times, for vitlab's model and its reference with the same weights:

- a training step: forward, cross-entropy, backward, AdamW step (train mode);
- inference: a forward pass in eval mode under ``torch.no_grad``.

References: timm's ``VisionTransformer`` (DeiT's ``VisionTransformerDistilled``
for a distilled ViT) for the ViT family, built from the vitlab model's options
(``timm_kwargs``); torchvision's ResNet of the same depth for the ResNets. The
VT-ResNets and the hybrids have no counterpart and are timed alone. The weights
are the reference's, copied into vitlab's model, and before anything is timed
both give the same logits in fp32 (max |difference| reported; a difference
over ``TOLERANCE`` stops the run with ``OutputMismatch``).

Each round times both models in both phases, back to back, the order of the
two models alternating from round to round, so that drifts of the machine
(clock, other load) hit both alike. Reported per phase: the median over
rounds (ms per batch, images/s), the ratio of the medians reference/vitlab
and the paired ratio, the median over rounds of the ratio of the two
back-to-back timings, the steadier figure on a shared machine. A ratio >= 1.0
means vitlab is not slower. On the GPU, timings are CUDA events between
synchronisations, and the model FLOP utilisation (MFU) is the achieved FLOP/s
(2 x MACs of ``count_flops`` per image, x 3 for a training step) over the
device's dense bf16 peak from ``PEAK_BF16_TFLOPS``.

Nothing here asserts a speed: speeds are measured (``benchmarks/RESULTS.md``),
never asserted in tests.
"""

from __future__ import annotations

import contextlib
import math
import platform
import re
import statistics
import time
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

PHASES = ("train", "inference")
PHASE_LABELS = {"train": "train step (fwd, CE, bwd, AdamW)", "inference": "inference (eval, no_grad)"}
# a training step counted as 3 forward passes (the backward pass costs about two)
FLOPS_FACTOR = {"train": 3, "inference": 1}
AMP = ("none", "bf16")

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, matched
# against torch.cuda.get_device_name in this order (first match wins). The V100 has no bf16:
# its fp16 peak. A practical peak is lower: an H100 runs a large bf16 matmul at about 800.
PEAK_BF16_TFLOPS: tuple[tuple[str, str, float], ...] = (
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100", "H100 SXM", 989.0),   # "NVIDIA H100 80GB HBM3"
    (r"H200", "H200", 989.0),
    (r"A100", "A100", 312.0),
    (r"\bL4\b", "L4", 121.0),        # not the L40 / L40S
    (r"RTX 4090", "RTX 4090", 165.0),
    (r"\bA10\b", "A10", 125.0),      # not the A100, nor the A10G
    (r"V100", "V100 (fp16)", 125.0),
)
# max |logit difference| allowed between vitlab and the reference (same weights, fp32, TF32 off),
# relative to max(1, max |logit|)
TOLERANCE = 1e-4


class OutputMismatch(RuntimeError):
    """vitlab's model and its reference give different logits with the same weights (a bug)."""


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------
def timm_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of timm's ``VisionTransformer`` for the architecture of a vitlab ViT,
    given its resolved options (``model.model_args``). Raises UserError for an option timm's
    model does not have."""
    pos = args.get("pos_embed", "learned")
    if pos not in ("learned", "none"):
        raise UserError(f"timm's VisionTransformer has no pos_embed={pos!r} (it has 'learned' and 'none'), so "
                        "there is nothing to compare with; use pos_embed=learned or none")
    if args.get("representation_size"):
        raise UserError("timm's VisionTransformer has no representation layer (representation_size), so there is "
                        "nothing to compare with; leave representation_size unset")
    dim, hidden = int(args["embed_dim"]), int(args["mlp_dim"])
    ratio = hidden / dim
    if int(dim * ratio) != hidden:  # timm sizes the MLP as int(dim * mlp_ratio): keep clear of rounding down
        ratio = (hidden + 0.5) / dim
    pool = args.get("pool", "cls")
    class_token = args.get("class_token")
    class_token = pool == "cls" if class_token is None else bool(class_token)
    size = args["img_size"]
    patch = args["patch_size"]
    dropout = float(args.get("dropout", 0.0))
    return dict(
        img_size=tuple(size) if isinstance(size, (tuple, list)) else size,
        patch_size=tuple(patch) if isinstance(patch, (tuple, list)) else patch,
        in_chans=args.get("in_chans", 3), num_classes=args["num_classes"], embed_dim=dim,
        depth=args["depth"], num_heads=args["num_heads"], mlp_ratio=ratio,
        global_pool="token" if pool == "cls" else "avg", class_token=class_token,
        fc_norm=bool(args.get("fc_norm", False)), pos_embed="learn" if pos == "learned" else "none",
        init_values=args.get("layer_scale"),
        # vitlab's dropout acts after the embeddings and in the MLP and attention outputs: timm's
        # pos_drop_rate and proj_drop_rate; timm's drop_rate (on the head) has no vitlab counterpart
        pos_drop_rate=dropout, proj_drop_rate=dropout, attn_drop_rate=float(args.get("attn_dropout", 0.0)),
        drop_path_rate=float(args.get("drop_path", 0.0)))


def timm_twin(args: dict[str, Any]) -> nn.Module:
    """timm's ViT (DeiT's distilled ViT with ``distilled``) with the architecture of a vitlab ViT."""
    kwargs = timm_kwargs(args)  # an option timm lacks fails before timm is imported
    _import_timm()
    if args.get("distilled"):
        from timm.models.deit import VisionTransformerDistilled
        return VisionTransformerDistilled(**kwargs)
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(**kwargs)


def torchvision_twin(name: str, args: dict[str, Any]) -> nn.Module | None:
    """torchvision's ResNet of the depth in ``name`` ('resnet50'), with vitlab's stem changes
    ('cifar': a 3x3 stride-1 convolution and no max-pool; other input channel counts);
    None for a name that gives no depth."""
    match = re.fullmatch(r"resnet(\d+)", name)
    if not match:
        return None
    from torchvision.models import resnet as tv

    builder = getattr(tv, f"resnet{match.group(1)}", None)
    if builder is None:
        return None
    net = builder(num_classes=args["num_classes"])
    in_chans = args.get("in_chans", 3)
    if args.get("stem", "imagenet") == "cifar":
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def _import_timm():
    try:
        import timm
    except ImportError:
        raise UserError("timm is not installed, and vitlab bench compares a ViT with timm's: "
                        "pip install timm") from None
    return timm


def _reference(name: str, family: str, args: dict[str, Any]) -> tuple[str, str, nn.Module] | None:
    """(library, class, model) of the reference implementation, or None where there is none."""
    if family == "vit":
        net = timm_twin(args)
        return "timm", f"{type(net).__module__}.{type(net).__name__}", net
    if family == "resnet":
        net = torchvision_twin(name, args)
        if net is not None:
            return "torchvision", f"torchvision.models.{name}", net
    return None


def _same_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy the reference's weights (its own initialisation: a non-zero head) into vitlab's model.
    Parameter names are the same in both (vitlab follows timm's and torchvision's)."""
    ours.load_state_dict(theirs.state_dict(), strict=True)


@contextlib.contextmanager
def _no_tf32():
    """fp32 convolutions and matmuls on the GPU without TF32 (the output check is in exact fp32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _logit_difference(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |logit difference|, max |logit| of the reference), eval mode, fp32."""
    ours.eval()
    theirs.eval()
    with torch.no_grad(), _no_tf32():
        a, b = ours(x).float(), theirs(x).float()
    return (a - b).abs().max().item(), b.abs().max().item()


# ------------------------------------------------------------------------------------------------
# machine
# ------------------------------------------------------------------------------------------------
def peak_tflops(device_name: str) -> tuple[str, float] | None:
    """(what matched, dense bf16 peak in TFLOP/s) of a GPU named ``device_name``, or None if unknown."""
    for pattern, label, peak in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return label, peak
    return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _check_device(spec: str) -> torch.device:
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda (cuda:N for one of several GPUs), got {spec!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}); "
                            "use --device cpu")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: there is no GPU {index} (this machine has "
                            f"{torch.cuda.device_count()}); use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        device = torch.device("cuda", index)
    return device


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def _timed(fn: Callable[[], None], iters: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``iters`` calls; on the GPU between synchronisations,
    measured with CUDA events (queued kernels are waited for, launch gaps are counted)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3 / iters
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def _steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: str) -> dict[str, Callable[[], None]]:
    """The two timed calls of one model: a training step and an inference forward pass."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def autocast():
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp == "bf16")

    def train() -> None:
        with autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def inference() -> None:
        with torch.no_grad(), autocast():
            model(x)

    return {"train": train, "inference": inference}


def _set_mode(model: nn.Module, phase: str) -> None:
    model.train(phase == "train")


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------
def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["depth=6", "pos_embed=sincos"]`` -> model options (values read as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set takes KEY=VALUE model options (e.g. --set depth=6), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"--set {key.strip()}: cannot read the value {raw!r}") from None
    return out


def run_bench(model: str = "vit_cifar", *, img_size: int | None = None, batch: int = 64, device: str = "cpu",
              amp: str = "none", rounds: int = 7, threads: int | None = None, compile: bool = False,
              overrides: dict[str, Any] | None = None, seed: int = 0, warmup: int = 1,
              min_seconds: float = 0.05, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time a registered vitlab model against its reference (see the module docstring).

    Args:
        model: a registered name (``vitlab models``).
        img_size: the model's image size (a ViT or hybrid is built for it); for a ResNet or
            VT-ResNet only the input size. Default: the model's own, 224 for a CNN.
        batch: images per step. device: 'cpu' or 'cuda[:N]'. amp: 'none' (fp32) or 'bf16'
            (``torch.autocast``). rounds: timed rounds (median). threads: CPU threads
            (``torch.set_num_threads``, restored afterwards). compile: ``torch.compile`` both.
        overrides: other model options, as ``create_model``'s keywords.
        warmup: untimed calls per model and phase before the rounds.
        min_seconds: each timing repeats its call until it lasts about this long (calibrated
            after warm-up; 0: one call per timing).
        progress: called with one line per round.

    Returns:
        a dict (JSON-ready): the model, its reference, the machine and the settings, the max
        |logit difference| of the two models, MACs per image, and for each phase ('train',
        'inference') ``vitlab`` and ``reference`` (None when there is none) timings
        (median_ms, min_ms, images_per_s, tflops_per_s, mfu; ms lists per round) with
        ``ratio`` (reference/vitlab of the medians) and ``paired_ratio``. ``mfu`` and
        ``peak_tflops`` are None off the GPU and on a GPU not in ``PEAK_BF16_TFLOPS``.

    Raises:
        UserError: unknown model or option, a model the reference library cannot build,
            rounds/batch/threads below 1, an unavailable device, timm not installed.
        OutputMismatch: the two models' logits differ with the same weights.
    """
    from . import create_model
    from .flops import count_flops
    from .models import model_defaults, model_family, model_options

    for flag, value in (("--rounds", rounds), ("--batch", batch), ("--threads", threads), ("--img-size", img_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be 1 or more, got {value}")
    if amp not in AMP:
        raise UserError(f"--amp must be one of {', '.join(AMP)}, got {amp!r}")
    dev = _check_device(device)
    if amp == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--amp bf16: {torch.cuda.get_device_name(dev)} has no bf16; use --amp none")

    overrides = dict(overrides or {})
    try:
        family = model_family(model)
        if img_size is not None and "img_size" in model_options(model):
            overrides["img_size"] = img_size
        args = model_defaults(model) | overrides
        with torch.device("meta"):  # shapes only: MACs and parameters without memory or time
            meta = create_model(model, **overrides)
    except (ValueError, TypeError) as e:
        raise UserError(str(e).split("\n")[0]) from None
    if args.get("num_classes", 1) < 1:
        raise UserError("vitlab bench trains with cross-entropy: the model needs num_classes of 1 or more")
    size = img_size or args.get("img_size") or 224
    h, w = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    in_chans = args.get("in_chans", 3)
    macs = count_flops(meta, (in_chans, h, w))
    params = sum(p.numel() for p in meta.parameters())
    del meta

    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        ref = _reference(model, family, args)
        ours = create_model(model, **overrides)
        libs = {"vitlab": ours}
        if ref is not None:
            _same_weights(ours, ref[2])
            libs["reference"] = ref[2]
        libs = {k: m.to(dev) for k, m in libs.items()}
        x = torch.randn(batch, in_chans, h, w, device=dev)
        y = torch.randint(0, args["num_classes"], (batch,), device=dev)

        diff = scale = None
        if ref is not None:
            diff, scale = _logit_difference(libs["vitlab"], libs["reference"], x)
            if not diff <= TOLERANCE * max(1.0, scale):  # also catches NaN
                raise OutputMismatch(
                    f"{model} in vitlab and {ref[0]}'s {ref[1]} give different logits with the same weights: "
                    f"max |difference| {diff:.3g} over the tolerance {TOLERANCE:g} x max(1, max |logit| "
                    f"{scale:.3g}); the benchmark would compare different computations")
        run = {k: torch.compile(m) if compile else m for k, m in libs.items()}
        steps = {k: _steps(m, x, y, amp) for k, m in run.items()}

        # warm-up (allocator, kernels, AdamW state, compilation), then how many calls make one timing
        iters = {}
        for phase in PHASES:
            last = 0.0
            for k in run:
                _set_mode(run[k], phase)
                for _ in range(warmup):
                    steps[k][phase]()
                if min_seconds > 0:
                    last = max(last, _timed(steps[k][phase], 1, dev))
            iters[phase] = 1 if min_seconds <= 0 or last >= min_seconds else \
                min(1000, math.ceil(min_seconds / max(last, 1e-6)))

        times: dict[str, dict[str, list[float]]] = {p: {k: [] for k in run} for p in PHASES}
        for r in range(rounds):
            order = list(run) if r % 2 == 0 else list(run)[::-1]  # who goes first alternates
            for phase in PHASES:
                for k in order:
                    _set_mode(run[k], phase)
                    times[phase][k].append(_timed(steps[k][phase], iters[phase], dev))
            if progress:
                progress(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{ref[0] if k == 'reference' else k} {p} {times[p][k][-1] * 1e3:.1f} ms"
                    for p in PHASES for k in run))
    finally:
        torch.set_num_threads(saved_threads)
    threads_used = threads or saved_threads

    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
        peak = peak_tflops(device_name)
        if peak is None:
            mfu_note = (f"MFU not reported: no dense bf16 peak is known for {device_name!r} "
                        "(vitlab.bench.PEAK_BF16_TFLOPS)")
        else:
            mfu_note = (f"MFU: achieved FLOP/s over the {peak[0]}'s dense bf16 peak, {peak[1]:g} TFLOP/s; "
                        "FLOPs = 2 x MACs per image, x 3 for a training step")
            if amp == "none":
                mfu_note += " (with --amp none the matmuls run in fp32, far from the bf16 peak)"
    else:
        device_name = cpu_name()
        peak = None
        mfu_note = "MFU not reported on the CPU (it is measured against a GPU's bf16 peak)"

    def summary(phase: str, ts: list[float]) -> dict[str, Any]:
        median = statistics.median(ts)
        flops = 2 * macs * FLOPS_FACTOR[phase] * batch / median
        return {"median_ms": median * 1e3, "min_ms": min(ts) * 1e3, "images_per_s": batch / median,
                "tflops_per_s": flops / 1e12, "mfu": flops / (peak[1] * 1e12) if peak else None,
                "ms": [t * 1e3 for t in ts]}

    phases = {}
    for phase in PHASES:
        entry = {"vitlab": summary(phase, times[phase]["vitlab"]), "reference": None, "ratio": None,
                 "paired_ratio": None}
        if ref is not None:
            ts_ours, ts_ref = times[phase]["vitlab"], times[phase]["reference"]
            entry["reference"] = summary(phase, ts_ref)
            entry["ratio"] = statistics.median(ts_ref) / statistics.median(ts_ours)
            entry["paired_ratio"] = statistics.median(b / a for a, b in zip(ts_ours, ts_ref))
        phases[phase] = entry

    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for lib in ("timm", "torchvision"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            versions[lib] = None
    return {
        "model": model, "family": family, "model_args": _plain(args), "params": params,
        "reference": ref[0] if ref else None, "reference_model": ref[1] if ref else None,
        "device": str(dev), "device_name": device_name, **versions, "threads": threads_used,
        "batch": batch, "img_size": [h, w], "in_chans": in_chans, "amp": amp, "compile": bool(compile),
        "rounds": rounds, "iters": iters,
        "max_abs_logit_diff": diff, "max_abs_logit": scale, "tolerance": TOLERANCE if ref else None,
        "macs_per_image": macs, "peak_tflops": peak[1] if peak else None, "mfu_note": mfu_note,
        "phases": phases,
    }


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------
def _ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def format_markdown(r: dict[str, Any]) -> str:
    """``run_bench``'s result as a Markdown heading, settings, a table and notes."""
    from .flops import format_macs

    ref = r["reference"]
    h, w = r["img_size"]
    shape = f"{r['in_chans']}x{h}x{w}"
    mfu = r["peak_tflops"] is not None
    lines = [f"### vitlab bench: {r['model']}" + (f" vs {ref}" if ref else " (no reference implementation)"), "",
             f"- model: {r['model']}, {r['params']:,} parameters, {format_macs(r['macs_per_image'])} per image "
             f"at {shape}; " + (f"reference: {ref} {r[ref]} `{r['reference_model']}`, same weights" if ref else
                                f"no {r['family']} model in timm or torchvision to compare with: vitlab alone"),
             f"- machine: {r['device']}: {r['device_name']}; torch {r['torch']}, python {r['python']}, "
             f"{r['threads']} CPU thread{'s' if r['threads'] != 1 else ''}",
             f"- run: batch {r['batch']}, image {shape}, amp {r['amp']}, "
             f"{'torch.compile' if r['compile'] else 'eager'}, {r['rounds']} round{'s' if r['rounds'] != 1 else ''}"
             + (" (the two models alternating within each round)" if ref else "")
             + ", calls per timing: " + ", ".join(f"{p} {r['iters'][p]}" for p in PHASES), ""]
    libs = ["vitlab"] + ([ref] if ref else [])
    head = ["phase"]
    for lib in libs:
        head += [f"{lib} ms", f"{lib} images/s"] + ([f"{lib} MFU"] if mfu else [])
    if ref:
        head += [f"{ref}/vitlab", "paired"]
    lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for phase in PHASES:
        p = r["phases"][phase]
        row = [PHASE_LABELS[phase]]
        for key in ["vitlab"] + (["reference"] if ref else []):
            s = p[key]
            row += [_ms(s["median_ms"]), _rate(s["images_per_s"])] + ([f"{100 * s['mfu']:.1f}%"] if mfu else [])
        if ref:
            row += [f"{p['ratio']:.3f}", f"{p['paired_ratio']:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "- ms: median over the rounds of one batch; images/s: batch / median."]
    if ref:
        lines += [f"- {ref}/vitlab: ratio of the medians; paired: median over the rounds of the ratio of the two "
                  f"back-to-back timings (steadier on a busy machine). >= 1.0: vitlab is not slower.",
                  f"- same weights: max |logit difference| {r['max_abs_logit_diff']:.2e} (max |logit| "
                  f"{r['max_abs_logit']:.3g}; fp32, allowed {r['tolerance']:g} x max(1, max |logit|))."]
    lines.append(f"- {r['mfu_note']}.")
    return "\n".join(lines)
