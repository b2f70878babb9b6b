"""Throughput of a vitlab model against the same architecture elsewhere (``vitlab bench``).

One process times, for vitlab's model and its reference with the same weights:

- a training step: forward, cross-entropy, backward, AdamW step (train mode);
- inference: a forward pass in eval mode under ``torch.no_grad``.

References (``bench.references``): timm's ``VisionTransformer`` (DeiT's
``VisionTransformerDistilled`` for a distilled ViT) for the ViT family, built from the
vitlab model's options (``timm_kwargs``); torchvision's ResNet of the same depth for the
ResNets. The VT-ResNets and the hybrids have no counterpart and are timed alone. The
weights are the reference's, copied into vitlab's model, and before anything is timed both
give the same logits in fp32 (max |difference| reported; a difference over ``TOLERANCE``
stops the run with ``OutputMismatch``).

Timing (``bench.timing``): each round times both models in both phases, back to back, the
order of the two models alternating from round to round, so that drifts of the machine
(clock, other load) hit both alike. Reported per phase: the median over rounds (ms per
batch, images/s), the ratio of the medians reference/vitlab and the paired ratio, the
median over rounds of the ratio of the two back-to-back timings, the steadier figure on a
shared machine. A ratio >= 1.0 means vitlab is not slower. On the GPU, timings are CUDA
events between synchronisations, and the model FLOP utilisation (MFU) is the achieved
FLOP/s (2 x MACs of ``count_flops`` per image, x 3 for a training step) over the device's
dense bf16 peak from ``PEAK_BF16_TFLOPS``. ``format_markdown`` (``bench.report``) writes
the result as Markdown.

Nothing here asserts a speed: speeds are measured (``benchmarks/RESULTS.md``), never
asserted in tests.
"""

from __future__ import annotations

import platform
from typing import Any, Callable, NamedTuple

import torch

from ..errors import UserError
from ..flops import model_size
from ..models import create_model, model_defaults, model_family, model_options
from ..run.runtime import resolve_device, torch_threads
from .references import (TOLERANCE, OutputMismatch, Reference, check_same_logits, timm_kwargs, timm_twin,
                         torchvision_twin, twin_models)
from .report import PHASE_LABELS, format_markdown
from .timing import (FLOPS_FACTOR, PEAK_BF16_TFLOPS, PHASES, cpu_name, describe_machine, peak_tflops,
                     phase_summaries, step_functions, timed_rounds, warm_up_and_calibrate)

__all__ = ["run_bench", "OutputMismatch", "parse_overrides", "format_markdown", "timm_kwargs", "timm_twin",
           "torchvision_twin", "peak_tflops", "cpu_name", "AMP", "PHASES", "PHASE_LABELS", "FLOPS_FACTOR",
           "PEAK_BF16_TFLOPS", "TOLERANCE"]

AMP = ("none", "bf16")


def parse_overrides(items: list[str], notes: list[str] | None = None) -> dict[str, Any]:
    """``["model.depth=6", "model.pos_embed=sincos"]`` (the config's spelling) -> the model's
    options ``{"depth": 6, "pos_embed": "sincos"}``, values read as YAML. A bare ``depth=6``
    is read as ``model.depth=6``, with a line for ``notes`` that says so; a key of another
    section is refused."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set takes KEY=VALUE model options (e.g. --set model.depth=6), got {item!r}")
        section, dot, name = key.partition(".")
        if not dot:
            section, name = "model", key
            if notes is not None:
                notes.append(f"--set {key}={raw} is now --set model.{key}={raw}")
        if section != "model" or not name:
            raise UserError(f"--set {key}: vitlab bench takes the model's options, model.KEY=VALUE "
                            "(e.g. --set model.depth=6)")
        if name == "name":
            raise UserError("--set model.name: give the model with --model")
        try:
            out[name] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot read the value {raw!r}") from None
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
        batch: images per step. device: 'cpu', 'cuda[:N]' or 'auto'. amp: 'none' (fp32) or
            'bf16' (``torch.autocast``). rounds: timed rounds (median). threads: CPU threads
            (``torch.set_num_threads``, restored afterwards). compile: ``torch.compile`` both.
        overrides: other model options, as ``create_model``'s keywords (``parse_overrides``
            reads them from ``--set model.KEY=VALUE``).
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
    _check_settings(rounds=rounds, batch=batch, threads=threads, img_size=img_size, amp=amp)
    dev = _bench_device(device, amp)
    spec = _model_spec(model, img_size, overrides)

    saved_threads = torch.get_num_threads()
    with torch_threads(threads):
        torch.manual_seed(seed)
        models, ref = _models_on(dev, model, spec)
        x, y = _random_batch(batch, spec, dev)
        diff, scale = check_same_logits(model, models["vitlab"], ref, x) if ref else (None, None)
        run = {k: torch.compile(m) if compile else m for k, m in models.items()}
        steps = {k: step_functions(m, x, y, amp) for k, m in run.items()}
        iters = warm_up_and_calibrate(run, steps, dev, warmup, min_seconds)
        labels = {k: ref.library if k == "reference" else k for k in run}
        times = timed_rounds(run, steps, iters, rounds, dev, labels, progress)
    device_name, peak, mfu_note = describe_machine(dev, amp)

    _, h, w = spec.shape
    return {
        "model": model, "family": spec.family, "model_args": _plain(spec.args), "params": spec.params,
        "reference": ref.library if ref else None, "reference_model": ref.class_name if ref else None,
        "device": str(dev), "device_name": device_name, **_versions(), "threads": threads or saved_threads,
        "batch": batch, "img_size": [h, w], "in_chans": spec.shape[0], "amp": amp, "compile": bool(compile),
        "rounds": rounds, "iters": iters,
        "max_abs_logit_diff": diff, "max_abs_logit": scale, "tolerance": TOLERANCE if ref else None,
        "macs_per_image": spec.macs, "peak_tflops": peak[1] if peak else None, "mfu_note": mfu_note,
        "phases": phase_summaries(times, spec.macs, batch, peak),
    }


# ------------------------------------------------------------------------------------------------
# the steps of run_bench
# ------------------------------------------------------------------------------------------------
class _ModelSpec(NamedTuple):
    """What is benchmarked: the model's family, resolved options (``args``), ``create_model``'s
    keywords (``options``), one image's (C, H, W), parameters and MACs per image."""
    family: str
    args: dict[str, Any]
    options: dict[str, Any]
    shape: tuple[int, int, int]
    params: int
    macs: int


def _check_settings(*, rounds: int, batch: int, threads: int | None, img_size: int | None, amp: str) -> None:
    for flag, value in (("--rounds", rounds), ("--batch-size", batch), ("--threads", threads),
                        ("--img-size", img_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be 1 or more, got {value}")
    if amp not in AMP:
        raise UserError(f"--amp must be one of {', '.join(AMP)}, got {amp!r}")


def _bench_device(name: str, amp: str) -> torch.device:
    """The device ``name`` names, a GPU with its index ('cuda' is cuda:0); UserError for one that is
    not there, or bf16 on a GPU without it."""
    dev = resolve_device(name, key="--device")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)
    if amp == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--amp bf16: {torch.cuda.get_device_name(dev)} has no bf16; use --amp none")
    return dev


def _model_spec(model: str, img_size: int | None, overrides: dict[str, Any] | None) -> _ModelSpec:
    """The model's options and input, with its parameters and MACs from a build on the meta device
    (shapes only: no memory, no time); UserError for an unknown model or option."""
    options = dict(overrides or {})
    try:
        family = model_family(model)
        if img_size is not None and "img_size" in model_options(model):
            options["img_size"] = img_size
        args = model_defaults(model) | options
        with torch.device("meta"):
            meta = create_model(model, **options)
    except (ValueError, TypeError) as e:
        raise UserError(str(e).split("\n")[0]) from None
    if args.get("num_classes", 1) < 1:
        raise UserError("vitlab bench trains with cross-entropy: the model needs num_classes of 1 or more")
    size = img_size or args.get("img_size") or 224
    h, w = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    shape = (args.get("in_chans", 3), h, w)
    params, macs = model_size(meta, shape)
    return _ModelSpec(family, args, options, shape, params, macs)


def _models_on(dev: torch.device, model: str, spec: _ModelSpec) -> tuple[dict[str, torch.nn.Module],
                                                                          Reference | None]:
    """{'vitlab': model, 'reference': its reference (absent where there is none)} on ``dev``, with
    the same weights, and the reference."""
    ours, ref = twin_models(model, spec.family, spec.args, lambda: create_model(model, **spec.options))
    models = {"vitlab": ours} if ref is None else {"vitlab": ours, "reference": ref.model}
    return {k: m.to(dev) for k, m in models.items()}, ref


def _random_batch(batch: int, spec: _ModelSpec, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels for one step."""
    x = torch.randn(batch, *spec.shape, device=dev)
    y = torch.randint(0, spec.args["num_classes"], (batch,), device=dev)
    return x, y


def _versions() -> dict[str, str | None]:
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for lib in ("timm", "torchvision"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            versions[lib] = None
    return versions


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v
