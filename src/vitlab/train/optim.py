"""Optimizers and per-step learning-rate schedules.

Weight decay applies only to weight matrices and conv kernels (``dim() >= 2``):
biases, norm parameters, position embeddings and the class token are kept out
(the model's ``no_weight_decay()`` names the latter two).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name in skip or name.split(".")[-1] in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, tc, fused: bool = False) -> torch.optim.Optimizer:
    """``tc`` is the ``train`` section of the config; ``fused``: torch's fused kernels
    (CUDA), else the multi-tensor (foreach) update."""
    groups = param_groups(model, tc.weight_decay)
    name = tc.optimizer.lower()
    # torch picks the multi-tensor (foreach) update only on CUDA; it is ~10% faster per step
    # on the CPU too for small ViTs, whose many small tensors make the per-tensor loop costly.
    fe = {"fused": True} if fused else {"foreach": True}
    if name == "adam":
        # Adam's weight decay is L2 added to the gradient (torch.optim.Adam), as the CIFAR recipe used.
        return torch.optim.Adam(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), **fe)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), **fe)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov, **fe)
    raise UserError(f"unknown train.optimizer {tc.optimizer!r}; choose adam, adamw or sgd")


def lr_factor(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float = 0.0,
              steps_per_epoch: int = 1, step_epochs: int = 30, step_gamma: float = 0.1) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warmup reaches the peak at step ``warmup - 1``; then
    'cosine' decays to ``min_ratio`` x peak at the last step, 'linear' to 0,
    'step' multiplies by ``step_gamma`` every ``step_epochs`` epochs and
    'constant' stays at the peak.
    """
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - 1 - warmup, 1)
    t = min(max(t, 0.0), 1.0)
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "linear":
        return 1.0 - t
    if schedule == "step":
        return step_gamma ** (step // max(steps_per_epoch * step_epochs, 1))
    if schedule == "constant":
        return 1.0
    raise UserError(f"unknown train.schedule {schedule!r}; choose cosine, linear, step or constant")


def total_steps(tc, steps_per_epoch: int) -> int:
    """Optimizer steps of the whole run: ``train.steps``, or ``train.epochs`` epochs."""
    return tc.steps if tc.steps else tc.epochs * steps_per_epoch


def warmup_steps(tc, steps_per_epoch: int) -> tuple[int, str | None]:
    """The warmup in optimizer steps, and a warning when it had to be shortened: a warmup as
    long as the run (a preset's 5 epochs in a 2-epoch run) would never reach the peak rate, so
    it is clipped to a tenth of the run."""
    total = total_steps(tc, steps_per_epoch)
    warmup = tc.warmup_steps if tc.warmup_steps is not None else int(round(tc.warmup_epochs * steps_per_epoch))
    if warmup < total:
        return warmup, None
    clipped = max(total // 10, 1) if total > 1 else 0
    return clipped, (f"warning: the warmup ({_steps(warmup)}) is not shorter than the run ({_steps(total)}): "
                     f"clipped to {_steps(clipped)}, a tenth of the run")


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def build_scheduler(optimizer: torch.optim.Optimizer, tc, steps_per_epoch: int):
    """Per-step schedule over ``total_steps``. A run resumed with a longer length keeps its
    step count and follows the longer plan from there (not bit-equal to a run planned that
    long from the start: its earlier steps used the shorter plan's rates)."""
    total = total_steps(tc, steps_per_epoch)
    warmup, _ = warmup_steps(tc, steps_per_epoch)
    min_ratio = tc.min_lr / tc.lr if tc.lr > 0 else 0.0
    lr_factor(0, total=total, warmup=warmup, schedule=tc.schedule)  # validates the name early
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, total=total, warmup=warmup, schedule=tc.schedule, min_ratio=min_ratio,
        steps_per_epoch=steps_per_epoch, step_epochs=tc.step_epochs, step_gamma=tc.step_gamma))
