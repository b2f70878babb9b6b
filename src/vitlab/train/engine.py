"""The training engine: the Trainer builds a run from its config, and ``fit``
runs one linear loop over epochs and steps.

It reads every option from the config (``vitlab.config``, checked when it was
read) and knows nothing of particular experiments. The run folder
(``vitlab.run.folder``) receives ``config.yaml``, ``metrics.csv``, ``best.pt``
(best validation accuracy), ``last.pt`` (every epoch, and on SIGINT/SIGTERM
in the middle of one), ``curves.png``, ``model_card.md`` and TensorBoard
events.

Reproducibility: the sample order and augmentation of an epoch come from
(seed, epoch) (``vitlab.data.loader``); the global RNG is reseeded at each
epoch start and saved in checkpoints, so a resumed CPU run ends with the same
weights and metrics as an uninterrupted one. Where a resumed epoch starts is
an ``EpochPosition``.

Distributed (``torchrun``): each process takes every WORLD_SIZE-th sample of
the epoch's order, padded so that every rank runs the same number of steps;
``train.batch_size`` is per process. Gradients are averaged by
DistributedDataParallel (not all-reduced on the micro-steps of gradient
accumulation); model randomness (dropout, drop-path, Mixup) is seeded per
rank, data order and augmentation from (seed, epoch) alone. A non-finite loss
or a signal on any rank stops every rank at the same step (``Dist.any``); the
epoch's partial sums are summed over the ranks (``Dist.sum``) before they are
saved, so a run stopped in the middle of an epoch resumes with any number of
processes. Evaluation covers the whole split exactly once, with the
batch-norm statistics of rank 0 (the ones saved). Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import config as config_mod
from ..data.loader import make_batches, place_data
from ..errors import UserError
from ..metrics import history_summary
from ..run import checkpoint
from ..run.folder import RunFolder
from ..run.runtime import (apply_device_settings, device_settings, finish_distributed, init_distributed,
                           require_compiler, resolve_device, seed_everything, set_rng_state, unwrap_model)
from .build import build_model, is_convolutional, load_weights, weights_normalisation
from .card import CardFacts, source_weights, write_card
from .freeze import apply_freeze, frozen_norms_to_eval
from .objectives import MaskedPatchPrediction
from .optim import build_optimizer, build_scheduler, total_steps, warmup_steps
from .position import EpochPosition
from .runlog import COLUMNS, Loggers, check_loggers, plot_curves, write_metrics
from .state import CheckpointState


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops, keeping the last good checkpoint."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM: the step finished and last.pt was written."""


class TimeBudget(Interrupted):
    """``train.max_seconds`` reached: the step finished and last.pt was written."""


class Trainer(CheckpointState):
    """Build everything a run needs from a config, then ``fit()``.

    The run folder is made only after the data and the model were built, so
    bad input leaves no half-made run folder behind.
    """

    def __init__(self, cfg: config_mod.Config, out_dir: str | Path, resume: bool = False):
        from ..data import batch_mixer, build_datasets

        self.cfg, self.out, tc = cfg, Path(out_dir), cfg.train
        self.folder = RunFolder(self.out)
        # what depends on this machine (the values were checked when the config was read)
        check_loggers(tc.loggers)
        self.dist, device_name = init_distributed(tc.device)
        self.device = resolve_device(device_name)
        if tc.amp == "fp16" and self.device.type != "cuda":
            raise UserError("train.amp=fp16 needs a CUDA device; use bf16 or none on the CPU")
        self.settings = device_settings(tc, self.device)
        apply_device_settings(self.settings, tc.threads)
        seed_everything(tc.seed)

        self.notes = []  # lines for the log and the model card
        self.source = None
        if cfg.model.pretrained and not resume:
            if not Path(cfg.model.pretrained).exists():
                raise UserError(f"weights file not found: {cfg.model.pretrained}")
            self.source = source_weights(cfg.model.pretrained)
            self.notes.append(weights_normalisation(cfg))
        self.train_ds, self.val_ds, self.info = build_datasets(cfg.data, tc.seed)
        if self.info.num_classes < 2 and tc.objective == "classification":
            raise UserError(f"the training images hold {self.info.num_classes} class ({', '.join(self.info.classes)}): "
                            "a classifier needs two or more (one folder per class)")
        self.mixer = batch_mixer(cfg.data, self.info.num_classes)
        self.notes.append(place_data(self.train_ds, self.val_ds, cfg.data, self.info, self.device))
        self.model = build_model(cfg, self.info, weights=False)
        self.weights_note = None  # what fitting the pretrained weights changed: a line of the log
        if cfg.model.pretrained and not resume:
            loaded = load_weights(self.model, cfg, self.info)
            self.source.update(layout=loaded.layout, changes=list(loaded.changes))  # for the model card
            self.weights_note = str(loaded)
            self.notes.append(self.weights_note)
        self.model = self.model.to(self.device)
        self.frozen = apply_freeze(self.model, cfg.model.freeze, cfg.model.freeze_blocks)
        self.memory_format = torch.preserve_format
        if self.settings["channels_last"] and is_convolutional(self.model):
            self.memory_format = torch.channels_last
            self.model = self.model.to(memory_format=torch.channels_last)
        # what trains: the model, or the model with the masked-patch-prediction head and mask token
        self.mpp = None
        if tc.objective == "mpp":
            self.mpp = MaskedPatchPrediction(self.model, self.info.mean, self.info.std, tc.seed).to(self.device)
            self.notes.append(f"objective: masked patch prediction ({self.mpp.corrupted_per_image} of "
                              f"{self.mpp.num_patches} patches corrupted per image; {self.mpp.classes} colour "
                              "classes; labels not used)")
        trained = self.mpp if self.mpp is not None else self.model
        self.per_image = self.mpp.corrupted_per_image if self.mpp is not None else 1  # predictions per image
        self.steps_per_epoch = math.ceil(len(self._batches(0, train=True)) / tc.accum_steps)
        self.total_steps = total_steps(tc, self.steps_per_epoch)
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = build_optimizer(trained, tc, fused=self.settings["fused"])
        self.scheduler = build_scheduler(self.optimizer, tc, self.steps_per_epoch)
        _, clipped = warmup_steps(tc, self.steps_per_epoch)
        if clipped:
            self.notes.append(clipped)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.settings["amp"] == "fp16")
        self.net = self.eval_net = trained
        self.ddp = None
        if self.dist.world > 1:  # masked patch prediction leaves the classification head unused
            self.net = self.ddp = nn.parallel.DistributedDataParallel(
                trained, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.mpp is not None)
        # The uncompiled nets run what compiled ones would have to recompile for: the short last batch of
        # an epoch or of the validation set. Training and evaluation have a compiled net each.
        self.eager_net, self.eager_eval_net = self.net, self.eval_net
        if tc.compile:
            require_compiler()
            self.net = torch.compile(self.net, dynamic=False)
            self.eval_net = torch.compile(trained, dynamic=False)
        self.train_batch = tc.batch_size
        self.eval_batch = tc.eval_batch_size or 2 * tc.batch_size

        self.epoch, self.best_acc, self.history = 0, -1.0, []
        self.position = EpochPosition()
        self._resume_rng = None
        if resume:  # read to the CPU first: the RNG states must stay there; the optimizer moves its own
            self._restore(checkpoint.load(self.out / "last.pt", map_location="cpu"))
        if self.dist.main:
            self._write_run_files(resume)
        self.stop_signal = None
        self.last_lr = self.optimizer.param_groups[0]["lr"]

    def _write_run_files(self, resume: bool) -> None:
        """The run folder with config.yaml (and bad_images.txt); nothing stays if this fails."""
        try:
            self.folder.make()
            config_mod.save(self.cfg, self.out / "config.yaml")
            bad = getattr(self.info, "bad_files", ())
            if bad:  # unreadable images left out of this run (data.bad_images=skip)
                from ..files import write_text
                write_text(self.out / "bad_images.txt", "".join(f"{p}\t{r}\n" for p, r in bad))
        except BaseException:
            if not resume:
                self.folder.discard_if_empty()
            raise

    # -- data ------------------------------------------------------------------------------------
    def _batches(self, epoch: int, train: bool, skip: int = 0):
        """This rank's batches of an epoch, without the order's first ``skip`` samples."""
        tc = self.cfg.train
        ds = self.train_ds if train else self.val_ds
        bs = tc.batch_size if train else (tc.eval_batch_size or 2 * tc.batch_size)  # the nets' batch sizes
        return make_batches(ds, bs, train=train, data_cfg=self.cfg.data, info=self.info,
                            device=self.device, seed=tc.seed, epoch=epoch, rank=self.dist.rank,
                            world=self.dist.world, skip=skip, num_workers=self.cfg.data.num_workers)

    def _autocast(self):
        amp = self.settings["amp"]
        if amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    # -- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if self.stop_signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.stop_signal = signum

    @contextlib.contextmanager
    def _signals_caught(self):
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to the end of the plan; returns the run's summary (``metrics.history_summary``)."""
        logs = None
        if self.dist.main:  # a resumed run discards the events of the steps it redoes
            logs = Loggers(self.cfg.train.loggers, self.out, self.cfg.to_dict(), self.out.name,
                           purge_step=self.epoch + 1 if self.epoch or self.position.started else None)
        stopped = None
        try:
            with self._signals_caught():
                if self.dist.main:
                    write_card(self.out, self.card_facts())
                while self.epoch < self.total_epochs:
                    train_row = self._train_epoch()
                    self._end_epoch(train_row, logs)
        except TimeBudget as e:
            _, acc, _ = self.evaluate()  # where the budget left the model (not an epoch of the history)
            stopped = {"stopped": str(e), "val_acc_now": acc}
        finally:
            if logs:
                logs.close()
        return {**history_summary(self.history, self.cfg.train.objective), "out": str(self.out), **(stopped or {})}

    def trained_seconds(self, since: float | None = None) -> float:
        """Seconds of training of the whole run (evaluation not counted): finished epochs, the part
        of this epoch before an interruption and, with ``since``, the time since then."""
        now = 0.0 if since is None else time.perf_counter() - since
        return sum(r.get("train_seconds", r["seconds"]) for r in self.history) + self.position.seconds + now

    def budget_spent(self) -> bool:
        budget = self.cfg.train.max_seconds
        return budget is not None and self.trained_seconds() >= budget

    def _seed_epoch(self, epoch: int) -> None:
        """Model randomness (dropout, drop path, Mixup) of this epoch: from (seed, epoch, rank),
        or where an interrupted epoch stopped."""
        base = self.cfg.train.seed * 1_000_003 + epoch
        if not self.position.started:
            seed_everything(self.dist.seed(base))
        elif self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        else:
            seed_everything(self.dist.seed(base * 1_000_000_007 + self.position.samples))

    def _train_epoch(self) -> dict:
        """One epoch (or what is left of it) of training; returns its train loss, accuracy,
        images and seconds. Raises ``Interrupted`` (after saving last.pt) on a signal and
        ``NonFiniteLoss`` when the loss is no longer a number."""
        from tqdm import tqdm

        tc, epoch, pos = self.cfg.train, self.epoch, self.position
        t0 = time.perf_counter()
        self._seed_epoch(epoch)
        loss_n, correct_n, counted = pos.sums or (0.0, 0.0, 0.0)  # counted: predictions (images, or patches)
        sums = torch.tensor([loss_n, correct_n], dtype=torch.float64, device=self.device)  # stays on the device
        self.net.train()
        frozen_norms_to_eval(self.model)
        done_before = self.steps_done
        batches = self._batches(epoch, train=True, skip=pos.samples)
        n_batches, every = len(batches), self.settings["check_every"]
        bar = tqdm(total=n_batches + done_before, initial=done_before, desc=f"epoch {epoch + 1}/{self.total_epochs}",
                   disable=None if (tc.progress and self.dist.main) else True, leave=False, dynamic_ncols=True)
        seen, seen_t = 0, time.perf_counter()  # this rank's images in this session of the epoch
        per = self.per_image
        for j, (x, y) in enumerate(batches):
            # micro-batch j of the optimizer step j // accum_steps; the last group may be shorter
            first = j - j % tc.accum_steps
            group = min(tc.accum_steps, n_batches - first)
            step_done = j + 1 == first + group
            sums += self._step(x, y, step_done, group)
            seen += len(y)
            bar.update(1)
            # The host reads the sums every `every` optimizer steps and at the epoch's end, only after an
            # optimizer step (accumulated gradients are not saved); every rank decides together.
            last = j + 1 == n_batches or (step_done and self.scheduler.last_epoch >= self.total_steps)
            if not step_done or (self.scheduler.last_epoch % every and not last):
                continue
            loss_n, correct_n = sums.tolist()
            budget = tc.max_seconds is not None and self.trained_seconds(t0) >= tc.max_seconds
            bad, stop, budget = self.dist.any([not math.isfinite(loss_n), self.stop_signal is not None, budget])
            if bad:
                what = loss_n if not math.isfinite(loss_n) else "non-finite on another rank"
                raise NonFiniteLoss(f"loss became {what} at epoch {epoch + 1}, step {done_before + j + 1}")
            if bar.disable is False:
                n = counted + seen * per
                bar.set_postfix(loss=f"{loss_n / n:.4f}", acc=f"{100 * correct_n / n:.2f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                img_s=f"{seen / max(time.perf_counter() - seen_t, 1e-9):.0f}")
            if stop or budget:
                self._interrupt(sums, counted + seen * per, seen, time.perf_counter() - t0, done_before + j + 1,
                                budget=budget and not stop)
            if last:
                break  # the epoch's end, or train.steps reached in its middle
        bar.close()
        loss_n, correct_n, n = self.dist.sum([*sums.tolist(), counted + seen * per])
        return {"train_loss": loss_n / n, "train_acc": correct_n / n, "train_images": int(n) // per,
                "train_seconds": pos.seconds + time.perf_counter() - t0, "started": t0, "seconds_before": pos.seconds}

    def _interrupt(self, sums: torch.Tensor, counted: int, seen: int, seconds: float, step: int,
                   budget: bool = False):
        """Save where this epoch stands (sums over the ranks) in last.pt, then raise ``Interrupted``
        (``TimeBudget`` when ``budget``)."""
        pos = self.position
        self.position = EpochPosition(samples=pos.samples + seen * self.dist.world,  # ranks' batches are equal
                                      sums=tuple(self.dist.sum([*sums.tolist(), counted])),
                                      seconds=pos.seconds + seconds)
        self._save("last.pt")
        if budget:
            raise TimeBudget(f"the time budget train.max_seconds={self.cfg.train.max_seconds:g} was reached after "
                             f"step {step} of epoch {self.epoch + 1} ({self.trained_seconds():.0f} s of training); "
                             f"last.pt saved, continue with `vitlab train --resume {self.out} --set "
                             "train.max_seconds=<more>`")
        name = (f"signal {signal.Signals(self.stop_signal).name}" if self.stop_signal
                else "a signal to another rank")
        raise Interrupted(f"stopped by {name} after step {step} of epoch {self.epoch + 1}; "
                          f"last.pt saved, resume with `vitlab train --resume {self.out}`")

    def _end_epoch(self, train: dict, logs) -> None:
        """Evaluate, record the epoch, write best.pt, last.pt, metrics, curves and the card."""
        val_loss, val_acc, _ = self.evaluate()
        epoch = self.epoch + 1
        self.epoch, self.position = epoch, EpochPosition()
        row = dict(epoch=epoch, train_loss=train["train_loss"], train_acc=train["train_acc"], val_loss=val_loss,
                   val_acc=val_acc, lr=self.last_lr,
                   seconds=train["seconds_before"] + time.perf_counter() - train["started"],
                   train_images=train["train_images"], train_seconds=train["train_seconds"])
        self.history.append(row)
        if self.mpp is None:
            is_best = val_acc > self.best_acc
        else:  # masked patch prediction: the lowest validation loss
            is_best = all(val_loss < r["val_loss"] for r in self.history[:-1])
        self.best_acc = max(self.best_acc, val_acc)
        if not self.dist.main:
            return
        # best.pt before last.pt: a run killed in between redoes this epoch on resume and
        # writes the same best.pt again; the other order would lose this epoch's best.pt
        if is_best:
            self._save("best.pt", full=False)
        self._save("last.pt")
        write_metrics(self.out / "metrics.csv", self.history)
        plot_curves(self.out / "curves.png", self.history, self.cfg.train.objective)
        write_card(self.out, self.card_facts())
        logs.scalars({k: row[k] for k in COLUMNS if k != "epoch"}, epoch)
        print(f"epoch {epoch}/{self.total_epochs}  train loss {row['train_loss']:.4f} "
              f"acc {100 * row['train_acc']:.2f}%  val loss {val_loss:.4f} acc {100 * val_acc:.2f}%"
              f"  lr {row['lr']:.2e}  {row['seconds']:.0f}s" + ("  *best" if is_best else ""), flush=True)

    def _step(self, x: torch.Tensor, y: torch.Tensor, step_done: bool, group: int) -> torch.Tensor:
        """Forward and backward of one batch of a group of ``group`` micro-batches
        whose gradients are averaged; the optimizer steps after the group's last
        (``step_done``). Returns (summed loss, correct count) as a float64 tensor on
        the device, not read by the host."""
        tc = self.cfg.train
        x = x.contiguous(memory_format=self.memory_format)
        if self.mpp is not None:
            return self._mpp_step(x, step_done, group)
        hard = y
        if self.mixer is not None:
            x, y = self.mixer(x, y)
        # the gradient all-reduce runs once per optimizer step, not on every micro-batch
        sync = contextlib.nullcontext() if step_done or self.ddp is None else self.ddp.no_sync()
        net = self.net if len(x) == self.train_batch else self.eager_net
        with sync:
            with self._autocast():
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
            self.scaler.scale(loss / group).backward()
        if step_done:
            self._optimizer_step()
        with torch.no_grad():
            correct = (logits.argmax(-1) == hard).sum()
            return torch.stack([loss.detach().double() * len(hard), correct.double()])

    def _mpp_step(self, x: torch.Tensor, step_done: bool, group: int) -> torch.Tensor:
        """``_step`` for masked patch prediction: the mean loss over the corrupted positions."""
        n = self.mpp.count(len(x))
        net = self.net if len(x) == self.train_batch else self.eager_net
        sync = contextlib.nullcontext() if step_done or self.ddp is None else self.ddp.no_sync()
        with sync:
            with self._autocast():
                loss_sum, correct = net(x)
            self.scaler.scale(loss_sum / n / group).backward()
        if step_done:
            self._optimizer_step()
        return torch.stack([loss_sum.detach().double(), correct.double()])

    def _optimizer_step(self) -> None:
        tc = self.cfg.train
        if tc.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], tc.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used, for the log
        self.scheduler.step()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """(loss, top-1, top-5) on the validation set."""
        if self.ddp is not None:  # every rank evaluates with rank 0's buffers (batch-norm statistics)
            self.dist.broadcast_buffers(self.model)
        self.model.eval()
        if self.mpp is not None:
            return self._evaluate_mpp()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, top-1, top-5
        n = 0
        for x, y in self._batches(0, train=False):  # the ranks' shards may differ in size: no DDP here
            net = self.eval_net if len(x) == self.eval_batch else self.eager_eval_net
            with self._autocast():
                logits = net(x.contiguous(memory_format=self.memory_format)).float()
            top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 (top[:, 0] == y).sum().double(), (top == y[:, None]).any(-1).sum().double()])
            n += len(y)
        loss, c1, c5, n = self.dist.sum([*sums.tolist(), n])
        return loss / n, c1 / n, c5 / n

    def _evaluate_mpp(self) -> tuple[float, float, float]:
        """(MPP loss, MPP accuracy, MPP accuracy) on the validation set, over its corrupted positions, with
        the same corruption at every epoch."""
        self.mpp.eval()
        self.mpp.generator = self.mpp.eval_generator(self.device)
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        n = 0
        try:
            for x, _ in self._batches(0, train=False):
                net = self.eval_net if len(x) == self.eval_batch else self.eager_eval_net
                with self._autocast():
                    loss_sum, correct = net(x.contiguous(memory_format=self.memory_format))
                sums += torch.stack([loss_sum.double(), correct.double()])
                n += self.mpp.count(len(x))
        finally:
            self.mpp.generator = None
        loss, correct, n = self.dist.sum([*sums.tolist(), n])
        return loss / n, correct / n, correct / n

    # -- the model card and the end --------------------------------------------------------------
    def card_facts(self) -> CardFacts:
        return CardFacts(
            run_name=self.out.name, cfg=self.cfg, info=self.info, model=unwrap_model(self.model),
            source=self.source, frozen=self.frozen, train_images=len(self.train_ds), val_images=len(self.val_ds),
            notes=[n for n in self.notes if n is not self.weights_note],  # the card's model section has it
            world=self.dist.world, settings=dict(self.settings),
            channels_last=self.memory_format == torch.channels_last, device=self.device,
            history=list(self.history), epochs_done=self.epoch, total_epochs=self.total_epochs,
            steps_done=self.scheduler.last_epoch, total_steps=self.total_steps)

    def close(self, wait_for_all: bool = True) -> None:
        """Release the model wrappers, then leave the process group (distributed runs; with
        ``wait_for_all``, after every rank got there): DistributedDataParallel's reducer must
        not outlive the process group."""
        self.net = self.eval_net = self.eager_net = self.eager_eval_net = self.ddp = None
        finish_distributed(self.dist, wait_for_all)
