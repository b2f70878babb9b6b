"""What the analyses share: refusing models they cannot analyse, the patch
geometry of an input, and running a model in eval mode over chunks of images.

The model interface used here is the ViT part of the model protocol
(``vitlab.models``): ``attention_maps(x)`` (one (B, heads, N, N) tensor per
block), ``grid_size()``, ``num_prefix_tokens`` and, where present,
``patch_embed.grid_for(h, w)``. Nothing else is assumed, so a small stub
object with these members can stand in for a model in tests.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..errors import UserError


class NotAnalysable(UserError, ValueError):
    """The model cannot be analysed this way (a CNN has no attention; a
    hybrid's patch embedding has no image-patch filters). A ``UserError``, so
    the CLI prints it on one line, and a ``ValueError`` for library callers."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '2 images' (``plural`` where adding an s is wrong: 'classes')."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def model_name(model) -> str:
    """The registry name when the model was built by ``create_model``, else its class name."""
    return getattr(model, "model_name", None) or type(model).__name__


def require_vit(model, what: str) -> None:
    """Refuse, with one line naming the model, a model without self-attention over patches."""
    if not (callable(getattr(model, "attention_maps", None)) and callable(getattr(model, "grid_size", None))):
        raise NotAnalysable(
            f"{what} needs a Vision Transformer (a ViT or hybrid ViT); model {model_name(model)!r} "
            f"({type(model).__name__}) has no attention maps over image patches")


def check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty batch (B, C, H, W), got {shape}")
    return images


def grid_of(model, h: int, w: int) -> tuple[int, int]:
    """The token grid (gh, gw) of an (h, w) input: the embedding's ``grid_for`` where it has
    one (inputs of another size than the build size), else the model's ``grid_size()``."""
    embed = getattr(model, "patch_embed", None)
    if embed is not None and callable(getattr(embed, "grid_for", None)):
        return tuple(embed.grid_for(h, w))
    return tuple(model.grid_size())


def patch_pixels(hw: tuple[int, int], grid: tuple[int, int]) -> tuple[float, float]:
    """Size of one token's patch in input pixels, (rows, cols): input size / grid.

    For a ViT this is ``patch_embed.patch_size`` exactly; for a hybrid it is the
    CNN's output stride (16 for R50+ViT-B/16, 4 for the CIFAR hybrid), which is
    why it is derived from the grid rather than read from an attribute."""
    return hw[0] / grid[0], hw[1] / grid[1]


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Run without dropout or stochastic depth; the model's mode is restored afterwards."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def model_device(model) -> torch.device | None:
    p = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return None if p is None else p.device


def attention_chunks(model, images: torch.Tensor, batch_size: int) -> Iterator[list[torch.Tensor]]:
    """``model.attention_maps`` of ``images`` in chunks of ``batch_size`` (the maps of all
    layers at once cost layers x B x heads x N^2 floats), checked against the token grid.
    Yields one list per chunk: L tensors (b, heads, N, N), float, on the model's device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
    grid = grid_of(model, *images.shape[-2:])
    n_expected = model.num_prefix_tokens + grid[0] * grid[1]
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        for chunk in images.split(batch_size):
            maps = model.attention_maps(chunk if device is None else chunk.to(device))
            for m in maps:
                if m.ndim != 4 or m.shape[-1] != n_expected or m.shape[-2] != n_expected:
                    raise ValueError(f"attention maps of shape {tuple(m.shape)} do not fit a {grid[0]}x{grid[1]} "
                                     f"grid with {counted(model.num_prefix_tokens, 'prefix token')} "
                                     f"({n_expected} tokens)")
            yield [m.float() for m in maps]
