"""Count the multiply-accumulates (MACs) of one forward pass.

Convention (the one behind the usual "ViT-B/16: 17.6 G" and "ResNet-50:
4.1 G" figures): multiply-accumulates of the matrix products and
convolutions, one image (batch 1) unless a batch is given. Attention's two
matrix products (q @ k^T and attn @ v) are included; element-wise work
(norms, softmax, GELU, residual additions, biases) is not.

Counting uses ``torch.utils.flop_counter.FlopCounterMode``, which reports
FLOPs = 2 x MACs for products. Fused attention kernels are not all known to
every torch version's counter (the CPU flash kernel, for one), so the count
runs with the math attention backend, which computes attention with two
batched matrix products that the counter always sees; fused kernels the
counter knows are counted with its own formula as a fallback.

``model_stats`` counts a registered model built on the meta device;
``cached_model_stats`` keeps those figures in a file under ``~/.cache/vitlab``
for as long as the code that gives them is the same (``vitlab models``,
``vitlab flops``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .errors import UserError


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of ``model``.

    Args:
        model: any module; it runs once in eval mode under ``torch.no_grad``
            on a zero input on its own device and dtype (its mode is restored).
            A model built on the meta device (``with torch.device("meta"):
            create_model(...)``) is counted from shapes alone, without
            initialising or computing anything.
        input_shape: (C, H, W) for one image, or (B, C, H, W).

    Returns:
        MACs (int): matmuls and convolutions, attention's q @ k^T and
        attn @ v included, element-wise operations excluded; batch 1 for a
        (C, H, W) shape. ViT-B/16 at 224 px gives about 17.56e9, torchvision's
        ResNet-50 about 4.09e9.
    """
    from torch.utils.flop_counter import FlopCounterMode  # here: it imports triton where that is installed

    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(f"input_shape must be (C, H, W) or (B, C, H, W), got {tuple(input_shape)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(shape, device=device, dtype=dtype)

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
        with torch.no_grad(), _math_attention(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def model_size(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """(parameters, MACs of one forward pass at ``input_shape``) of ``model``.

    Build the model on the meta device (``with torch.device("meta"): model = build()``) for
    both from shapes alone, without memory or time; ``input_shape`` is as ``count_flops``'s.
    """
    return sum(p.numel() for p in model.parameters()), count_flops(model, input_shape)


def format_macs(n: int | float) -> str:
    """17_563_545_600 -> '17.56 GMACs'."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}MACs"
    return f"{int(n)} MACs"


def _math_attention():
    """Route F.scaled_dot_product_attention to its math backend (two bmm)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the CPU path is the math one already
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def _attention_formulas() -> dict:
    """FLOP formulas for fused attention kernels the installed counter may
    lack: q (B, H, N, d) @ k^T, then (B, H, N, M) @ v."""
    def sdpa(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
        b, h, n, d = q_shape
        m, dv = k_shape[-2], v_shape[-1]
        return 2 * b * h * n * m * d + 2 * b * h * n * m * dv

    try:
        from torch.utils.flop_counter import flop_registry
    except ImportError:
        flop_registry = {}
    aten = torch.ops.aten
    names = ["_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"]
    return {getattr(aten, n): sdpa for n in names
            if hasattr(aten, n) and getattr(aten, n) not in flop_registry}


def model_stats(name: str, img_size: int | None = None) -> tuple[int, int, tuple]:
    """(parameters, MACs, input shape) of the registered model ``name``, built on the meta device
    (no memory, no time). ``img_size`` sizes the model when it takes one (a ViT, a hybrid); a ResNet
    takes any size, so there it only sets the input that is counted. Without it: the model's default
    size, or 224."""
    from .models import create_model, model_defaults, model_options

    kwargs = {"img_size": img_size} if img_size and "img_size" in model_options(name) else {}
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    d = model_defaults(name) | kwargs
    size = img_size or d.get("img_size") or 224
    shape = (d.get("in_chans", 3),) + (tuple(size) if isinstance(size, (tuple, list)) else (size, size))
    return (*model_size(model, shape), shape)


def cache_file() -> Path | None:
    """Where ``cached_model_stats`` keeps its figures: ``~/.cache/vitlab/model_stats.json``
    (``$XDG_CACHE_HOME/vitlab/...`` when set); None where there is no home folder."""
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "vitlab" / "model_stats.json"
    except RuntimeError:  # no home folder
        return None


def cached_model_stats(names: Sequence[str], img_size: int | None = None,
                       path: Path | None = None) -> dict[str, tuple[int, int, tuple]]:
    """``model_stats`` of each of ``names``, read from the file ``path`` (default ``cache_file()``)
    where the same code counted them before, counted and written there otherwise.

    Counting every registered model takes seconds (a forward pass of each on the meta device),
    while the figures change only with the code: the file's entries hold for one torch version
    and one text of ``vitlab.models`` and this module, and each for the model's name, family,
    description and default arguments; any change and they are counted again. The models are
    those of ``vitlab.models`` (the command line's). A file that cannot be read or written is
    no error: the figures are counted."""
    from .files import make_dirs, write_text
    from .models import model_defaults, model_description, model_family

    path = cache_file() if path is None else path
    key = _code_fingerprint()
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path else {}
        entries = saved["entries"] if saved.get("code") == key and isinstance(saved.get("entries"), dict) else {}
    except (OSError, ValueError, AttributeError, TypeError):
        entries = {}
    out, new = {}, False
    for name in names:
        entry = json.dumps([name, img_size, model_family(name), model_description(name), model_defaults(name)],
                           sort_keys=True, default=repr)
        try:
            params, macs, shape = entries[entry]
            out[name] = (int(params), int(macs), tuple(int(v) for v in shape))
            continue
        except (KeyError, TypeError, ValueError):  # not there, or not what this code writes
            pass
        out[name] = model_stats(name, img_size)
        entries[entry] = [out[name][0], out[name][1], list(out[name][2])]
        new = True
    if new and path:
        try:
            make_dirs(path.parent)
            write_text(path, json.dumps({"code": key, "entries": entries}, indent=0) + "\n")
        except UserError:  # a read-only or full disk: counted again next time
            pass
    return out


def _code_fingerprint() -> str:
    """A hash of what the figures depend on: torch's version and the source of the models and of
    this module."""
    from . import models

    h = hashlib.sha256(torch.__version__.encode())
    for f in sorted(Path(models.__file__).parent.glob("*.py")) + [Path(__file__)]:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()
