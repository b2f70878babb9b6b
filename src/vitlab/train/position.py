"""Where a run stands inside an epoch, for resuming in its middle.

The training order of an epoch is drawn from (seed, epoch) (``vitlab.data.loader``);
a run stopped in the middle of an epoch saves how many samples of that order
all ranks together trained on, the running sums of the epoch's metrics and
the seconds it had trained, and resumes from there with any number of
processes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EpochPosition:
    samples: int = 0  # samples of this epoch's order trained on (all ranks together)
    sums: tuple[float, float, float] | None = None  # (loss x images, correct, images) so far; None: not started
    seconds: float = 0.0  # training seconds of the part done before the interruption

    @property
    def started(self) -> bool:
        return self.sums is not None

    def steps(self, batch_size: int, world: int) -> int:
        """Batches each rank has trained on in this epoch (for messages)."""
        return -(-self.samples // (batch_size * world))

    def state(self) -> dict:
        """The checkpoint entries (``skip_samples``, ``partial``)."""
        partial = None if self.sums is None else {"sums": list(self.sums), "seconds": self.seconds}
        return {"skip_samples": self.samples, "partial": partial}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, batch_size: int) -> EpochPosition:
        """The position saved in ``ckpt``; before 0.4 it was counted in batches of a
        one-process run (``skip``)."""
        samples = ckpt.get("skip_samples", ckpt.get("skip", 0) * batch_size)
        partial = ckpt.get("partial")
        if partial is None:
            return cls(samples)
        return cls(samples, tuple(partial["sums"]), partial["seconds"])
