"""vitlab: Vision Transformers in PyTorch, from the paper to your own data.

The public names are imported on first use (PEP 562), so that ``import vitlab``
and ``vitlab --help`` do not pay for importing torch:

- ``create_model(name, **options)``, ``list_models(family=None)``: the model registry
  (``vitlab.models``);
- ``load_pretrained(model, source, ...)``: weights of timm, Hugging Face, Google .npz,
  big_vision or vitlab layout (``vitlab.weights``);
- ``count_flops(model, input_shape)``: multiply-accumulates of one forward pass
  (``vitlab.flops``);
- ``load_run(path, ...)``: a trained run's model and what it was trained on
  (``vitlab.run.load``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.6.0"

# public name -> the module that defines it
_LAZY = {
    "create_model": "vitlab.models",
    "list_models": "vitlab.models",
    "load_pretrained": "vitlab.weights",
    "count_flops": "vitlab.flops",
    "load_run": "vitlab.run.load",
}

__all__ = ["create_model", "list_models", "load_pretrained", "count_flops", "load_run", "__version__"]

if TYPE_CHECKING:  # what type checkers and editors see; nothing is imported at run time
    from .flops import count_flops
    from .models import create_model, list_models
    from .run.load import load_run
    from .weights import load_pretrained


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vitlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return list(__all__)
