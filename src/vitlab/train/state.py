"""What a Trainer writes into a checkpoint and reads back from one to resume: the model,
the objective's own parameters, the optimizer, schedule, grad scaler, RNG state and the
position inside an epoch (``vitlab.run.checkpoint`` describes the format)."""

from __future__ import annotations

from .. import __version__
from ..errors import UserError
from ..run import checkpoint
from ..run.runtime import rng_state, unwrap_model
from .position import EpochPosition


class CheckpointState:
    """The checkpoint side of ``vitlab.train.engine.Trainer`` (a base class of it)."""

    def _state(self, full: bool) -> dict:
        model = unwrap_model(self.model)
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
        if self.mpp is not None:  # the mask token and the prediction head, apart from the model
            state["objective"] = self.mpp.extra_state()
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), rng=rng_state(), world_size=self.dist.world,
                         **self.position.state())
        return state

    def _restore(self, ckpt: dict) -> None:
        missing = [k for k in ("optimizer", "scheduler", "scaler", "rng", "epoch") if k not in ckpt]
        if missing:  # e.g. best.pt (weights only) copied over last.pt
            raise UserError(f"{self.out / 'last.pt'} cannot be resumed: it holds no {', '.join(missing)} "
                            "(best.pt holds weights only; resume from the last.pt of a run)")
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        if self.mpp is not None:
            self.mpp.load_extra_state(ckpt.get("objective", {}))
        self._load_optimizer(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.best_acc, self.history = ckpt["epoch"], ckpt["best_acc"], ckpt["history"]
        self.source = ckpt.get("source_weights")
        self.position = EpochPosition.from_checkpoint(ckpt, self.cfg.train.batch_size)
        if self.position.started and not self.dist.main:  # rank 0 carries the summed partial sums
            self.position.sums = (0.0, 0.0, 0.0)
        # The saved RNG state is rank 0's: restored exactly by a one-process run of a one-process
        # checkpoint; with several processes each rank reseeds from (seed, epoch, position, rank).
        same = self.dist.world == 1 and ckpt.get("world_size", 1) == 1
        self._resume_rng = ckpt["rng"] if same else None

    def _load_optimizer(self, state: dict) -> None:
        """The saved optimizer state, run with this machine's kernels: the saved ``fused`` and
        ``foreach`` flags (of the machine that saved it) are replaced by this run's."""
        kernels = {k: g[k] for g in self.optimizer.param_groups for k in ("fused", "foreach") if k in g}
        self.optimizer.load_state_dict(state)
        for g in self.optimizer.param_groups:
            g.update(kernels)

    def _save(self, name: str, full: bool = True) -> None:
        if self.dist.main:
            checkpoint.save(self._state(full), self.out / name)

    @property
    def steps_done(self) -> int:
        """Batches of the current epoch already trained on by each rank (for messages)."""
        return self.position.steps(self.cfg.train.batch_size, self.dist.world)
