"""``model_card.md``: what a run is, written beside its checkpoints.

Architecture and parameter count, the source weights (file name, sha256,
layout, and what fitting them to the model changed), data and preprocessing,
the recipe, the result so far, the hardware and the time. Rewritten
(atomically) when the run starts and after every epoch, so that it always
describes the checkpoints next to it.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..data import describe_transforms
from ..files import write_text
from ..metrics import history_summary


def source_weights(path: str | os.PathLike) -> dict:
    """File name, size and sha256 of a weights file (or of a folder's files, e.g. a
    Hugging Face checkpoint folder, hashed in name order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    size = 0
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    return {"file": p.name, "path": str(p), "sha256": h.hexdigest(), "bytes": size}


def _hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
               f"{torch.get_num_threads()} threads)"
    return f"{world} x {name}" if world > 1 else name


@dataclass
class CardFacts:
    """Everything the model card says of a run (the Trainer fills it in)."""
    run_name: str
    cfg: object  # vitlab.config.Config
    info: object  # vitlab.data.DatasetInfo
    model: nn.Module
    source: dict | None  # source_weights() of the pretrained file (+ its layout and changes), None from scratch
    frozen: int  # frozen parameters (elements)
    train_images: int
    val_images: int
    notes: list[str]  # lines of the log (normalisation, data path, ...)
    world: int  # processes
    settings: dict  # the resolved speed switches (amp, deterministic, tf32, fused, ...)
    channels_last: bool
    device: torch.device
    history: list[dict]  # one row per finished epoch
    epochs_done: int
    total_epochs: int
    steps_done: int  # optimizer steps taken
    total_steps: int


def card_lines(t: CardFacts) -> list[str]:
    """The card of a run, as Markdown lines."""
    cfg, tc, d, info, model = t.cfg, t.cfg.train, t.cfg.data, t.info, t.model
    n = sum(p.numel() for p in model.parameters())
    args = ", ".join(f"{k}={v!r}" for k, v in model.model_args.items())
    src = t.source
    weights = (f"`{src['file']}` ({src['bytes']:,} bytes), sha256 `{src['sha256']}`" if src
               else "none: trained from scratch")
    fitted = _fitted(src, cfg.model.keep_head)
    split = getattr(info, "val_split", "test")
    held = d.holdout or d.val_fraction
    val = (f"a seeded, stratified {100 * held:g}% of the training images (holdout)" if split == "holdout"
           else "the dataset's validation split" if split == "val" else "the dataset's test split")
    global_batch = tc.batch_size * tc.accum_steps * t.world
    length = f"{tc.steps:,} steps" if tc.steps else f"{tc.epochs} epochs"
    warm = (f"{tc.warmup_steps} steps" if tc.warmup_steps is not None else f"{tc.warmup_epochs:g} epochs")
    freeze = ("only the head trains (model.freeze=backbone)" if cfg.model.freeze == "backbone"
              else f"patch embedding and the first {cfg.model.freeze_blocks} blocks frozen"
              if cfg.model.freeze_blocks else "every parameter trains")
    h = t.history
    if h:
        run = history_summary(h, tc.objective)
        done = t.epochs_done >= t.total_epochs
        result = [f"- {'finished' if done else 'in progress'}: {len(h)} of {t.total_epochs} epochs, "
                  f"{t.steps_done:,} of {t.total_steps:,} optimizer steps",
                  f"- best validation top-1 {100 * run['best_acc']:.2f}% (epoch {run['best_epoch']}, `best.pt`); "
                  f"last {100 * run['final_acc']:.2f}% (`last.pt`)",
                  f"- training time {run['seconds']:,.0f} s (evaluation included)"]
    else:
        result = ["- not trained yet"]
    return [
        f"# Model card: {t.run_name}", "",
        "## Model", "",
        f"- `{model.model_name}` ({args})",
        f"- {n:,} parameters" + (f", {t.frozen:,} of them frozen; {freeze}" if t.frozen else f"; {freeze}"),
        f"- source weights: {weights}" + fitted, "",
        "## Data", "",
        f"- `{info.name}`" + (f" from `{d.root}`" if d.root else "") + f": {t.train_images:,} training images, "
        f"{t.val_images:,} validation images ({val}), {info.num_classes} classes",
        f"- input {info.in_chans} x {d.img_size or info.img_size} px; normalisation mean {list(info.mean)}, "
        f"std {list(info.std)}",
        f"- transforms: {describe_transforms(d)}"
        + (f"; label smoothing {tc.label_smoothing:g}" if tc.label_smoothing else ""), *(
            f"- {note}" for note in t.notes), "",
        "## Recipe", "",
        *(["- objective: masked patch prediction (the ViT paper's section 4.6): half of each image's patch "
           "embeddings corrupted, the mean colour of each corrupted patch predicted; labels not used; "
           "`best.pt` is the epoch of the lowest validation loss"] if tc.objective == "mpp" else []),
        f"- {tc.optimizer}, peak learning rate {tc.lr:g}, {tc.schedule} schedule, warmup {warm}, "
        f"weight decay {tc.weight_decay:g}" + (f", momentum {tc.momentum:g}" if tc.optimizer == "sgd" else ""),
        f"- batch {global_batch} ({tc.batch_size} per process x {tc.accum_steps} accumulated x "
        f"{t.world} processes), {length}"
        + (f", gradient clipping at norm {tc.clip_grad:g}" if tc.clip_grad else "")
        + (f", {t.settings['amp']} autocast" if t.settings["amp"] != "none" else "") + f", seed {tc.seed}",
        "- " + ", ".join(f"{k} {v}" for k, v in t.settings.items() if k != "amp")
        + (", channels-last" if t.channels_last else ""), "",
        "## Result", "", *result, "",
        "## Hardware and software", "",
        f"- {_hardware(t.device, t.world)}; torch {torch.__version__}, vitlab {__version__}, "
        f"Python {platform.python_version()}", "",
        "The whole config is `config.yaml`; per-epoch numbers are in `metrics.csv`.", "",
    ]


def _fitted(src: dict | None, keep_head: bool) -> str:
    """What loading the source weights changed, after their description: from the
    report of ``load_pretrained`` kept with them; before it was kept, the head rule."""
    if not src:
        return ""
    if "changes" not in src:
        return "; " + ("the file's head kept" if keep_head else "a new zero-initialised head")
    layout = f" ({src['layout']} layout)" if src.get("layout") else ""
    if not src["changes"]:
        return f"{layout}; every tensor loaded as it is"
    return f"{layout}; fitted to the model:" + "".join(f"\n  - {c}" for c in src["changes"])


def write_card(out: Path, facts: CardFacts) -> None:
    """``out/model_card.md``, written atomically."""
    write_text(Path(out) / "model_card.md", "\n".join(card_lines(facts)))
