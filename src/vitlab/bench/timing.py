"""How ``vitlab bench`` times: the timed calls, warm-up and calibration, the rounds, the
figures drawn from them, and what the machine is (its name, a GPU's bf16 peak for MFU).

Each round times both models in both phases, back to back, the order of the two models
alternating from round to round, so that drifts of the machine (clock, other load) hit both
alike. On the GPU, timings are CUDA events between synchronisations.
"""

from __future__ import annotations

import math
import platform
import re
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

PHASES = ("train", "inference")
# a training step counted as 3 forward passes (the backward pass costs about two)
FLOPS_FACTOR = {"train": 3, "inference": 1}

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

Steps = dict[str, Callable[[], None]]  # phase -> one timed call


# ------------------------------------------------------------------------------------------------
# the machine
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


def describe_machine(dev: torch.device, amp: str) -> tuple[str, tuple[str, float] | None, str]:
    """(the device's name, its ``peak_tflops`` or None, a note on what MFU is measured against)."""
    if dev.type != "cuda":
        return cpu_name(), None, "MFU not reported on the CPU (it is measured against a GPU's bf16 peak)"
    device_name = torch.cuda.get_device_name(dev)
    peak = peak_tflops(device_name)
    if peak is None:
        return device_name, None, (f"MFU not reported: no dense bf16 peak is known for {device_name!r} "
                                   "(vitlab.bench.PEAK_BF16_TFLOPS)")
    note = (f"MFU: achieved FLOP/s over the {peak[0]}'s dense bf16 peak, {peak[1]:g} TFLOP/s; "
            "FLOPs = 2 x MACs per image, x 3 for a training step")
    if amp == "none":
        note += " (with --amp none the matmuls run in fp32, far from the bf16 peak)"
    return device_name, peak, note


# ------------------------------------------------------------------------------------------------
# the timed calls
# ------------------------------------------------------------------------------------------------
def step_functions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: str) -> Steps:
    """The two timed calls of one model: a training step (forward, cross-entropy, backward,
    AdamW step) and an inference forward pass (under ``torch.no_grad``)."""
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


def set_mode(model: nn.Module, phase: str) -> None:
    """Train mode for the training step, eval mode for inference."""
    model.train(phase == "train")


def timed(fn: Callable[[], None], iters: int, device: torch.device) -> float:
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


# ------------------------------------------------------------------------------------------------
# warm-up and rounds
# ------------------------------------------------------------------------------------------------
def warm_up_and_calibrate(models: dict[str, nn.Module], steps: dict[str, Steps], dev: torch.device,
                          warmup: int, min_seconds: float) -> dict[str, int]:
    """``warmup`` untimed calls per model and phase (allocator, kernels, AdamW state, compilation),
    then per phase how many calls make one timing of about ``min_seconds`` (1 for 0)."""
    iters = {}
    for phase in PHASES:
        last = 0.0
        for k in models:
            set_mode(models[k], phase)
            for _ in range(warmup):
                steps[k][phase]()
            if min_seconds > 0:
                last = max(last, timed(steps[k][phase], 1, dev))
        iters[phase] = 1 if min_seconds <= 0 or last >= min_seconds else \
            min(1000, math.ceil(min_seconds / max(last, 1e-6)))
    return iters


def timed_rounds(models: dict[str, nn.Module], steps: dict[str, Steps], iters: dict[str, int], rounds: int,
                 dev: torch.device, labels: dict[str, str],
                 progress: Callable[[str], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Seconds per call, per phase and model, one per round: each round times every model in
    every phase, who goes first alternating. ``progress`` gets one line per round, the models
    named by ``labels``."""
    times: dict[str, dict[str, list[float]]] = {p: {k: [] for k in models} for p in PHASES}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]  # who goes first alternates
        for phase in PHASES:
            for k in order:
                set_mode(models[k], phase)
                times[phase][k].append(timed(steps[k][phase], iters[phase], dev))
        if progress:
            progress(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{labels[k]} {p} {times[p][k][-1] * 1e3:.1f} ms" for p in PHASES for k in models))
    return times


# ------------------------------------------------------------------------------------------------
# the figures
# ------------------------------------------------------------------------------------------------
def timing_summary(phase: str, ts: list[float], macs: int, batch: int,
                   peak: tuple[str, float] | None) -> dict[str, Any]:
    """One model's figures in one phase from its timings ``ts`` (seconds per batch)."""
    median = statistics.median(ts)
    flops = 2 * macs * FLOPS_FACTOR[phase] * batch / median
    return {"median_ms": median * 1e3, "min_ms": min(ts) * 1e3, "images_per_s": batch / median,
            "tflops_per_s": flops / 1e12, "mfu": flops / (peak[1] * 1e12) if peak else None,
            "ms": [t * 1e3 for t in ts]}


def phase_summaries(times: dict[str, dict[str, list[float]]], macs: int, batch: int,
                    peak: tuple[str, float] | None) -> dict[str, dict[str, Any]]:
    """Per phase: ``vitlab`` and ``reference`` figures (None without a reference), ``ratio``
    (reference/vitlab of the medians) and ``paired_ratio`` (median of the per-round ratios)."""
    phases = {}
    for phase in PHASES:
        entry = {"vitlab": timing_summary(phase, times[phase]["vitlab"], macs, batch, peak), "reference": None,
                 "ratio": None, "paired_ratio": None}
        if "reference" in times[phase]:
            ts_ours, ts_ref = times[phase]["vitlab"], times[phase]["reference"]
            entry["reference"] = timing_summary(phase, ts_ref, macs, batch, peak)
            entry["ratio"] = statistics.median(ts_ref) / statistics.median(ts_ours)
            entry["paired_ratio"] = statistics.median(b / a for a, b in zip(ts_ours, ts_ref))
        phases[phase] = entry
    return phases
