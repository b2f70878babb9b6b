"""What loading pretrained weights changed: one line per adaptation (head
replaced, position embeddings resampled, a token or layer dropped, input
channels adapted, tensors left out), each also logged on the ``vitlab.weights``
logger as it is made."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("vitlab.weights")


@dataclass(frozen=True)
class LoadReport:
    """What ``load_pretrained`` did. ``str(report)`` is one line for a log."""
    source: str  # the file read (a Hugging Face folder: its weights file), or 'the given state dict'
    layout: str  # the layout detected: 'timm/vitlab', 'vitlab', 'hf', 'google' or 'big_vision'
    loaded: int  # tensors copied into the model
    changes: tuple[str, ...] = ()  # one line per adaptation, in the order made; () when every tensor fit as is
    head_loaded: bool = True  # False: the model's head was zero-initialised (or it has none) instead
    missing: tuple[str, ...] = ()  # model tensors the file lacks, left at their initial values (strict=False)
    unused: tuple[str, ...] = ()  # tensors of the file the model did not take (strict=False)
    classes: tuple[str, ...] | None = None  # the head's class names, where the file says (a vitlab checkpoint)

    def summary(self) -> str:
        """``pretrained weights: FILE (LAYOUT layout, N tensors): CHANGE; CHANGE`` (or
        ``...: every tensor loaded as it is``)."""
        what = "; ".join(self.changes) if self.changes else "every tensor loaded as it is"
        return f"pretrained weights: {self.source} ({self.layout} layout, {self.loaded} tensors): {what}"

    def __str__(self) -> str:
        return self.summary()


class Changes:
    """Collects the change lines of one load; each is logged (INFO, or ``level``) when added."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, msg: str, *args, level: int = logging.INFO) -> None:
        text = msg % args if args else msg
        log.log(level, "%s", text)
        self.lines.append(text)

