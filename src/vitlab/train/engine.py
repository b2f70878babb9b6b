"""The training engine: one linear loop over epochs and steps.

It reads every option from the config (``vitlab.config``) and knows
nothing of particular experiments. A run directory holds ``config.yaml``
(the resolved config), ``metrics.csv``, ``best.pt`` (best validation
accuracy), ``last.pt`` (written every epoch, and on SIGINT/SIGTERM in the
middle of one), ``curves.png`` and TensorBoard event files.

Reproducibility: the sample order and augmentation of an epoch come from
(seed, epoch) (``vitlab.data.loader``); the global RNG is reseeded at each
epoch start and saved in checkpoints, so a resumed CPU run ends with the same
weights and metrics as an uninterrupted one.

Distributed: launched by ``torchrun``, each process takes every
WORLD_SIZE-th sample of the epoch's order, padded so that every rank runs the
same number of steps (``vitlab.data.loader``); ``train.batch_size`` is per
process. Gradients are averaged by DistributedDataParallel (not all-reduced on
the micro-steps of gradient accumulation); model randomness (dropout,
drop-path, Mixup) is seeded per rank, data order and augmentation from (seed,
epoch) alone. A non-finite loss or a signal on any rank stops every rank at
the same step; the epoch's partial sums are all-reduced before they are
saved, so a run stopped in the middle of an epoch resumes with any number of
processes. Evaluation covers the whole split exactly once, with the batch-norm
statistics of rank 0 (the ones saved). Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..errors import UserError
from ..models import create_model
from .. import config as config_mod
from ..run import checkpoint
from .card import source_weights, write_card
from .freeze import apply_freeze, frozen_norms_to_eval
from ..data.loader import fast_path_ok, make_batches
from .optim import build_optimizer, build_scheduler, total_steps
from .runlog import COLUMNS, Loggers, check_loggers, plot_curves, write_metrics


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops, keeping the last good checkpoint."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM: the step finished and last.pt was written."""


# --- set-up helpers, also used by evaluation --------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device is {name!r} but CUDA is not available; use train.device=cpu")
    return dev


def build_model(cfg, info, weights: bool = True) -> nn.Module:
    """The model of ``cfg.model`` sized for the dataset ``info``: its channels
    and classes, and its image size unless the config sets one. A builder that
    cannot take the dataset's channels or classes is refused in one line.

    With ``model.pretrained`` (and ``weights``; a resumed run takes its weights
    from its checkpoint instead) the file is loaded with ``load_pretrained``
    (position embeddings resampled, channels adapted) and, unless
    ``model.keep_head``, the head is replaced by a zero-initialised one."""
    from ..models.registry import model_options
    options = model_options(cfg.model.name)  # the name was checked when the config was read
    args = dict(cfg.model.args)
    for key, value in (("in_chans", info.in_chans), ("num_classes", info.num_classes)):
        if key not in options:
            raise UserError(f"model {cfg.model.name!r} cannot be sized for the dataset: it takes no {key}")
        args[key] = value
    if "img_size" in options:
        args["img_size"] = args.get("img_size") or cfg.data.img_size or info.img_size
    try:
        model = create_model(cfg.model.name, **args)
    except ValueError as e:
        raise UserError(f"cannot build model {cfg.model.name!r}: {e}") from None
    if cfg.model.pretrained and weights:
        from ..weights import load_pretrained
        model = load_pretrained(model, cfg.model.pretrained)
        if not cfg.model.keep_head:
            model.reset_classifier(info.num_classes)
    return model


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild any registered model from a vitlab checkpoint (``model_name`` and
    ``model_args``; checkpoints before 0.3 hold a ViT's ``model_config``)."""
    try:
        model = create_model(ckpt["model_name"], **ckpt.get("model_args", ckpt.get("model_config", {})))
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"cannot rebuild the checkpoint's model: {e}") from None
    model.load_state_dict(ckpt["model"])
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    # numpy's state is stored as a tensor and plain numbers: checkpoints are read with
    # torch.load(weights_only=True), which refuses numpy arrays.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "random": random.getstate(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    ns = state["numpy"]
    np.random.set_state((ns["name"], ns["keys"].numpy().astype(np.uint32), ns["pos"], ns["has_gauss"],
                         ns["cached_gaussian"]))
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _is_convolutional(model: nn.Module) -> bool:
    """Models whose work is mostly convolutions (ResNets, VT-ResNets, hybrids): channels-last helps them."""
    from ..models.registry import model_family
    try:
        return model_family(model.model_name) in ("resnet", "vt", "hybrid")
    except (AttributeError, ValueError):
        return False


def _unwrap_model(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float], device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flags: list[bool], device) -> list[bool]:
        """Each flag true on every rank if it is true on some rank."""
        if self.world == 1:
            return flags
        t = torch.tensor(flags, dtype=torch.int32, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def seed(self, base: int) -> int:
        """The seed of this rank's model randomness: ``base`` on rank 0 (a one-process
        run is unchanged), distinct on every other rank."""
        return base + self.rank * 1_000_000_009


def _init_distributed(device_name: str) -> tuple[_Dist, str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    return _Dist(rank, world), device_name


# --- the trainer ------------------------------------------------------------------------------

class Trainer:
    """Build everything a run needs from a config, then ``fit()``.

    ``out_dir`` is created only after the data and the model were built, so
    bad input leaves no half-made run directory behind.
    """

    def __init__(self, cfg: config_mod.Config, out_dir: str | Path, resume: bool = False):
        from ..data import build_datasets, batch_mixer

        self.cfg, self.out = cfg, Path(out_dir)
        tc = cfg.train
        for key, ok in (("train.epochs", tc.epochs >= 1), ("train.batch_size", tc.batch_size >= 1),
                        ("train.accum_steps", tc.accum_steps >= 1), ("train.lr", tc.lr >= 0),
                        ("train.steps", tc.steps is None or tc.steps >= 1)):
            if not ok:
                raise UserError(f"{key} must be positive")
        if tc.amp not in ("auto", "none", "bf16", "fp16"):
            raise UserError(f"unknown train.amp {tc.amp!r}; choose auto, none, bf16 or fp16")
        if tc.check_every is not None and tc.check_every < 1:
            raise UserError("train.check_every must be 1 or more")
        check_loggers(tc.loggers)
        self.dist, device_name = _init_distributed(tc.device)
        self.device = resolve_device(device_name)
        if tc.amp == "fp16" and self.device.type != "cuda":
            raise UserError("train.amp=fp16 needs a CUDA device; use bf16 or none on the CPU")
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        self.settings = self._device_settings()
        if self.settings["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.use_deterministic_algorithms(False)
            torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = self.settings["tf32"]
        torch.backends.cudnn.allow_tf32 = self.settings["tf32"]
        seed_everything(tc.seed)

        self.notes = []  # lines for the log and the model card
        if cfg.model.pretrained and not resume:
            if not Path(cfg.model.pretrained).exists():
                raise UserError(f"weights file not found: {cfg.model.pretrained}")
            self.source = source_weights(cfg.model.pretrained)
            self._weights_normalisation()
        else:
            self.source = None
        self.train_ds, self.val_ds, self.info = build_datasets(cfg.data, tc.seed)
        self.mixer = batch_mixer(cfg.data, self.info.num_classes)
        batched = fast_path_ok(self.train_ds, cfg.data, True, self.info)
        self.notes.append("training images: " + ("in memory, augmented in batches on the training device"
                                                 if batched else "read and augmented one at a time (DataLoader)"))
        self.model = build_model(cfg, self.info, weights=not resume).to(self.device)
        self.frozen = apply_freeze(self.model, cfg.model.freeze, cfg.model.freeze_blocks)
        self.memory_format = torch.preserve_format
        if self.settings["channels_last"] and _is_convolutional(self.model):
            self.memory_format = torch.channels_last
            self.model = self.model.to(memory_format=torch.channels_last)
        self.steps_per_epoch = math.ceil(len(self._batches(0, train=True)) / tc.accum_steps)
        self.total_steps = total_steps(tc, self.steps_per_epoch)
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = build_optimizer(self.model, tc, fused=self.settings["fused"])
        self.scheduler = build_scheduler(self.optimizer, tc, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.settings["amp"] == "fp16")
        self.net = self.eval_net = self.model
        self.ddp = None
        if self.dist.world > 1:
            self.net = self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if tc.compile:
            self.net = torch.compile(self.net)
            self.eval_net = self.net if self.ddp is None else torch.compile(self.model)

        self.epoch, self.best_acc, self.history = 0, -1.0, []
        self.skip = 0  # samples of this epoch's order trained on (all ranks together)
        self.partial = None  # sums of a half-done epoch, restored on resume
        if resume:  # read to the CPU first: the RNG states must stay there; the optimizer moves its own
            self._restore(checkpoint.load(self.out / "last.pt", map_location="cpu"))
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".*.tmp"):  # left by a process killed while writing a file
                stale.unlink(missing_ok=True)
            config_mod.save(cfg, self.out / "config.yaml")
            bad = getattr(self.info, "bad_files", ())
            if bad:  # unreadable images left out of this run (data.bad_images=skip)
                (self.out / "bad_images.txt").write_text("".join(f"{p}\t{r}\n" for p, r in bad), encoding="utf-8")
        self.stop_signal = None
        self.last_lr = self.optimizer.param_groups[0]["lr"]

    def _device_settings(self) -> dict:
        """The config's speed switches with their per-device defaults (None/'auto') resolved."""
        tc, cuda = self.cfg.train, self.device.type == "cuda"
        det = tc.deterministic if tc.deterministic is not None else not cuda
        return {"amp": tc.amp if tc.amp != "auto" else ("bf16" if cuda else "none"),
                "deterministic": det,
                "tf32": tc.tf32 if tc.tf32 is not None else (cuda and not det),
                "fused": tc.fused if tc.fused is not None else cuda,
                "channels_last": tc.channels_last if tc.channels_last is not None else cuda,
                "check_every": tc.check_every or (25 if cuda else 1)}

    def _weights_normalisation(self) -> None:
        """data.mean/std from the weights' own convention where it is known and the config sets none."""
        data = self.cfg.data
        if data.mean is not None or data.std is not None:
            self.notes.append(f"normalisation: data.mean={data.mean}, data.std={data.std} (from the config)")
            return
        from ..weights import weights_normalisation
        found = weights_normalisation(self.cfg.model.pretrained)
        if found is None:
            self.notes.append("normalisation: the dataset's own statistics (the weights' convention is not known)")
            return
        mean, std, where = found
        from ..data.datasets import DATASETS, _canonical_name
        spec = DATASETS.get(_canonical_name(data.name))
        if spec is not None and spec.in_chans == 1 and len(mean) > 1:  # RGB statistics, one-channel data
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        data.mean, data.std = list(mean), list(std)
        self.notes.append(f"normalisation: mean={list(mean)}, std={list(std)}, the weights' convention ({where})")

    # -- data ------------------------------------------------------------------------------------
    def _batches(self, epoch: int, train: bool, skip: int = 0):
        """This rank's batches of an epoch, without the order's first ``skip`` samples."""
        tc = self.cfg.train
        ds = self.train_ds if train else self.val_ds
        bs = tc.batch_size if train else (tc.eval_batch_size or 2 * tc.batch_size)
        return make_batches(ds, bs, train=train, data_cfg=self.cfg.data, info=self.info,
                            device=self.device, seed=tc.seed, epoch=epoch, rank=self.dist.rank,
                            world=self.dist.world, skip=skip, num_workers=self.cfg.data.num_workers)

    def _autocast(self):
        amp = self.settings["amp"]
        if amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    # -- checkpoints -----------------------------------------------------------------------------
    def _state(self, full: bool) -> dict:
        model = _unwrap_model(self.model)
        state = {
            "model": model.state_dict(),
            "model_name": model.model_name,
            "model_args": model.model_args,
            "config": self.cfg.to_dict(),
            "dataset": {k: getattr(self.info, k) for k in ("name", "num_classes", "in_chans", "img_size",
                                                           "mean", "std", "classes")},
            "epoch": self.epoch, "best_acc": self.best_acc, "history": self.history,
            "vitlab_version": __version__, "source_weights": self.source,
        }
        if hasattr(model, "grid_size"):  # the patch grid, for resampling position embeddings on load
            state["grid_size"] = tuple(model.grid_size())
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), rng=_rng_state(), skip_samples=self.skip,
                         world_size=self.dist.world, partial=self.partial)
        return state

    def _restore(self, ckpt: dict) -> None:
        missing = [k for k in ("optimizer", "scheduler", "scaler", "rng", "epoch") if k not in ckpt]
        if missing:  # e.g. best.pt (weights only) copied over last.pt
            raise UserError(f"{self.out / 'last.pt'} cannot be resumed: it holds no {', '.join(missing)} "
                            "(best.pt holds weights only; resume from the last.pt of a run)")
        _unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.best_acc, self.history = ckpt["epoch"], ckpt["best_acc"], ckpt["history"]
        self.source = ckpt.get("source_weights")
        # before 0.4 the position in the epoch was counted in batches of a one-process run
        self.skip = ckpt.get("skip_samples", ckpt.get("skip", 0) * self.cfg.train.batch_size)
        self.partial = ckpt.get("partial")
        if self.partial is not None and not self.dist.main:  # rank 0 carries the all-reduced sums
            self.partial = {**self.partial, "sums": [0.0, 0.0, 0.0]}
        # The saved RNG state is rank 0's: restored exactly by a one-process run of a one-process
        # checkpoint; with several processes each rank reseeds from (seed, epoch, position, rank).
        same = self.dist.world == 1 and ckpt.get("world_size", 1) == 1
        self._resume_rng = ckpt["rng"] if same else None

    @property
    def steps_done(self) -> int:
        """Batches of the current epoch already trained on by each rank (for messages)."""
        return -(-self.skip // (self.cfg.train.batch_size * self.dist.world))

    def _save(self, name: str, full: bool = True) -> None:
        if self.dist.main:
            checkpoint.save(self._state(full), self.out / name)

    # -- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if self.stop_signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.stop_signal = signum

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict:
        tc = self.cfg.train
        from tqdm import tqdm

        logs = Loggers(tc.loggers, self.out, self.cfg.to_dict(), self.out.name) if self.dist.main else None
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.dist.main:
                write_card(self)
            while self.epoch < self.total_epochs:
                epoch = self.epoch
                t0 = time.perf_counter()
                base_seed = tc.seed * 1_000_003 + epoch
                if self.partial is None:
                    seed_everything(self.dist.seed(base_seed))
                    sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss x n, correct, n
                    seconds_before = 0.0
                else:  # resuming in the middle of this epoch
                    if self._resume_rng is not None:
                        _set_rng_state(self._resume_rng)
                    else:
                        seed_everything(self.dist.seed(base_seed * 1_000_000_007 + self.skip))
                    sums = torch.tensor(self.partial["sums"], dtype=torch.float64, device=self.device)
                    seconds_before = self.partial["seconds"]
                self.net.train()
                frozen_norms_to_eval(self.model)
                start, done_before = self.skip, self.steps_done
                batches = self._batches(epoch, train=True, skip=start)
                n_batches = len(batches)
                bar = tqdm(total=n_batches + done_before, initial=done_before,
                           desc=f"epoch {epoch + 1}/{self.total_epochs}",
                           disable=None if (tc.progress and self.dist.main) else True, leave=False,
                           dynamic_ncols=True)
                seen_t, seen_n = time.perf_counter(), 0
                every = self.settings["check_every"]
                for j, (x, y) in enumerate(batches):
                    # micro-batch j of the optimizer step j // accum_steps; the last group may be shorter
                    first = j - j % tc.accum_steps
                    group = min(tc.accum_steps, n_batches - first)
                    step_done = j + 1 == first + group
                    sums += self._step(x, y, step_done, group)  # stays on the device: no host sync
                    seen_n += len(y)
                    bar.update(1)
                    # the host reads the sums every `every` optimizer steps and at the epoch's end; the
                    # decisions are taken on every rank together, so that no rank waits in a collective
                    # for another, and only after an optimizer step (accumulated gradients are not saved)
                    last = j + 1 == n_batches or (step_done and self.scheduler.last_epoch >= self.total_steps)
                    if not step_done or (self.scheduler.last_epoch % every and not last):
                        continue
                    loss_n, correct_n, n = sums.tolist()
                    bad, stop = self.dist.any([not math.isfinite(loss_n), self.stop_signal is not None],
                                              self.device)
                    if bad:
                        what = loss_n if not math.isfinite(loss_n) else "non-finite on another rank"
                        raise NonFiniteLoss(f"loss became {what} at epoch {epoch + 1}, step {done_before + j + 1}")
                    if bar.disable is False:
                        rate = seen_n / max(time.perf_counter() - seen_t, 1e-9)
                        bar.set_postfix(loss=f"{loss_n / n:.4f}", acc=f"{100 * correct_n / n:.2f}",
                                        lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", img_s=f"{rate:.0f}")
                    if stop:
                        self.skip = start + seen_n * self.dist.world  # every rank's batches are the same size
                        self.partial = {"sums": self.dist.sum(sums.tolist(), self.device),
                                        "seconds": seconds_before + time.perf_counter() - t0}
                        self._save("last.pt")
                        name = (f"signal {signal.Signals(self.stop_signal).name}" if self.stop_signal
                                else "a signal to another rank")
                        raise Interrupted(f"stopped by {name} after step {done_before + j + 1} of epoch {epoch + 1}; "
                                          f"last.pt saved, resume with `vitlab train --resume {self.out}`")
                    if last:
                        break  # the epoch's end, or train.steps reached in its middle
                bar.close()
                train_seconds = seconds_before + time.perf_counter() - t0
                lr = self.last_lr
                loss_n, correct_n, n = self.dist.sum(sums.tolist(), self.device)
                val_loss, val_acc, _ = self.evaluate()
                self.epoch, self.skip, self.partial = epoch + 1, 0, None
                row = dict(epoch=epoch + 1, train_loss=loss_n / n, train_acc=correct_n / n, val_loss=val_loss,
                           val_acc=val_acc, lr=lr, seconds=seconds_before + time.perf_counter() - t0,
                           train_images=int(n), train_seconds=train_seconds)  # the last two: for images/s
                self.history.append(row)
                is_best = val_acc > self.best_acc
                self.best_acc = max(self.best_acc, val_acc)
                if self.dist.main:
                    # best.pt before last.pt: a run killed in between redoes this epoch on resume and
                    # writes the same best.pt again; the other order would lose this epoch's best.pt
                    if is_best:
                        self._save("best.pt", full=False)
                    self._save("last.pt")
                    write_metrics(self.out / "metrics.csv", self.history)
                    plot_curves(self.out / "curves.png", self.history)
                    write_card(self)
                    logs.scalars({k: row[k] for k in COLUMNS if k != "epoch"}, epoch + 1)
                    print(f"epoch {epoch + 1}/{self.total_epochs}  train loss {row['train_loss']:.4f} "
                          f"acc {100 * row['train_acc']:.2f}%  val loss {val_loss:.4f} acc {100 * val_acc:.2f}%"
                          f"  lr {lr:.2e}  {row['seconds']:.0f}s" + ("  *best" if is_best else ""), flush=True)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if logs:
                logs.close()
        best = max(self.history, key=lambda r: r["val_acc"])
        return {"best_acc": best["val_acc"], "best_epoch": best["epoch"], "final_acc": self.history[-1]["val_acc"],
                "epochs": len(self.history), "seconds": sum(r["seconds"] for r in self.history),
                "out": str(self.out)}

    def _step(self, x: torch.Tensor, y: torch.Tensor, step_done: bool, group: int) -> torch.Tensor:
        """Forward and backward of one batch of a group of ``group`` micro-batches
        whose gradients are averaged; the optimizer steps after the group's last
        (``step_done``). Returns (summed loss, correct count, images) as a float64
        tensor on the device, not read by the host."""
        tc = self.cfg.train
        x = x.contiguous(memory_format=self.memory_format)
        hard = y
        if self.mixer is not None:
            x, y = self.mixer(x, y)
        # the gradient all-reduce runs once per optimizer step, not on every micro-batch
        sync = contextlib.nullcontext() if step_done or self.ddp is None else self.ddp.no_sync()
        with sync:
            with self._autocast():
                logits = self.net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
            self.scaler.scale(loss / group).backward()
        if step_done:
            if tc.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.last_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used, for the log
            self.scheduler.step()
        with torch.no_grad():
            correct = (logits.argmax(-1) == hard).sum()
            n = torch.tensor(float(len(hard)), device=loss.device)
            return torch.stack([loss.detach().double() * len(hard), correct.double(), n.double()])

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """(loss, top-1, top-5) on the validation set."""
        if self.ddp is not None:  # every rank evaluates with rank 0's buffers (batch-norm statistics)
            for b in self.model.buffers():
                dist.broadcast(b, 0)
        self.eval_net.eval()
        acc = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in self._batches(0, train=False):  # the ranks' shards may differ in size: no DDP here
            with self._autocast():
                logits = self.eval_net(x.contiguous(memory_format=self.memory_format)).float()
            top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
            acc += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                (top[:, 0] == y).sum().double(), (top == y[:, None]).any(-1).sum().double(),
                                torch.tensor(float(len(y)), dtype=torch.float64, device=self.device)])
        loss, c1, c5, n = self.dist.sum(acc.tolist(), self.device)
        return loss / n, c1 / n, c5 / n
