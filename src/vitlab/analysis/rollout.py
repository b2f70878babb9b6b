"""Attention rollout: which input patches the model's output draws on.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020
(arXiv:2005.00928), as the ViT paper uses it (Dosovitskiy et al., ICLR 2021,
section 4.5 and appendix D.8, figures 6 and 14): average the attention weights
over the heads, add the identity for the residual connection, and multiply the
matrices of all layers, so that attention mixed over several layers is
followed back to the input tokens.

Per layer l, with the heads' softmax weights (B, heads, N, N):

    W_l = fuse over heads (mean, as the paper; or max, or min)      (B, N, N)
    [discard the lowest fraction of each image's W_l, see below]
    A_l = 0.5 W_l + 0.5 I, rows renormalised to sum 1
    R   = A_L ... A_2 A_1                                            (B, N, N)

Row i of R says how much each input token contributes to output token i. The
map is the class token's row over the patch columns; a model without a class
token (pool='avg') classifies the mean of its output tokens, so its map is the
mean of R's rows (the contribution of each input token to that mean). The map
is reshaped to the patch grid and scaled to a maximum of 1 per image (an
all-zero map, e.g. a class token that only ever attends to itself, stays zero).

``discard_ratio`` (not in the paper, which uses the plain mean; a common
add-on that sharpens the maps): in every layer, after the head fusion, the
lowest ``discard_ratio`` fraction of each image's N x N fused weights is set to
zero, counted and chosen per image, for every image of the batch (one
well-known public implementation discards only in the first image of a batch,
so its maps depend on the batch an image comes in). The class token's
attention to itself is never discarded, as in that implementation, so maps
stay comparable; it is left out of the count (without a class token every
entry counts). The rows are not renormalised before the identity is added, so
discarded mass shifts weight to the residual path; the renormalisation after
adding I makes each row sum to 1 again. With max or min fusion the rows do not
sum to 1 either, and are treated the same way.
"""

from __future__ import annotations

import torch

from ._common import attention_chunks, check_images, grid_of, require_vit

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attn: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(B, heads, N, N) -> (B, N, N): the mean, the maximum or the minimum over the heads."""
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}; got {head_fusion!r}")


def discard_lowest(w: torch.Tensor, discard_ratio: float, keep_first: bool = True) -> torch.Tensor:
    """Zero the lowest ``discard_ratio`` fraction of each image's weights w (B, N, N).

    The count is floor(ratio * entries) per image, where entries is N*N less the
    class token's self-attention w[:, 0, 0] when ``keep_first`` (that entry is
    never discarded). Returns a new tensor."""
    _check_ratio(discard_ratio)
    b, n, _ = w.shape
    flat = w.reshape(b, n * n).clone()
    count = n * n - int(keep_first)
    k = int(discard_ratio * count)
    if k == 0:
        return flat.view(b, n, n)
    score = flat.clone()
    if keep_first:
        score[:, 0] = torch.inf  # entry (0, 0): never among the lowest
    lowest = score.topk(k, dim=1, largest=False).indices  # (B, k): per image
    return flat.scatter_(1, lowest, 0.0).view(b, n, n)


def rollout(maps: list[torch.Tensor], num_prefix_tokens: int = 1, head_fusion: str = "mean",
            discard_ratio: float = 0.0) -> torch.Tensor:
    """Rollout matrix R = A_L ... A_1 (B, N, N) of per-layer attention maps
    [(B, heads, N, N), first layer first]; see the module docstring."""
    if not maps:
        raise ValueError("rollout needs the attention maps of at least one layer")
    _check_ratio(discard_ratio)
    result = None
    for attn in maps:
        w = fuse_heads(attn.float(), head_fusion)
        if discard_ratio > 0:
            w = discard_lowest(w, discard_ratio, keep_first=num_prefix_tokens > 0)
        eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
        a = 0.5 * w + 0.5 * eye  # the residual connection carries each token through
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result  # the later layer multiplies from the left
    return result


def rollout_map(r: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
    """Rollout matrix (B, N, N) -> map (B, gh, gw), maximum 1 per image: the class
    token's row (pool='cls'), else the mean of the rows (pool='avg'), over the patches."""
    if num_prefix_tokens > 0:
        row = r[:, 0, num_prefix_tokens:]  # (B, gh*gw): the class token comes first
    else:
        row = r.mean(dim=1)  # the mean over the output tokens, as the 'avg' pool
    peak = row.amax(dim=1, keepdim=True).clamp_min(torch.finfo(row.dtype).tiny)
    return (row / peak).reshape(-1, *grid)


def attention_rollout(model, images: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0,
                      batch_size: int = 32) -> torch.Tensor:
    """Attention rollout maps (B, gh, gw) on the CPU, each scaled to maximum 1, of ``images``
    (B, C, H, W) as the model takes them (normalised).

    ``head_fusion``: 'mean' (the paper's), 'max' or 'min' over the heads;
    ``discard_ratio`` in [0, 1): the lowest fraction of each image's fused
    weights dropped in every layer (0: the paper's rollout). Images are run in
    eval mode, ``batch_size`` at a time; every image's map is the same whatever
    batch it comes in. Raises ``UserError`` for a model without attention (a CNN).
    """
    require_vit(model, "attention rollout")
    if head_fusion not in HEAD_FUSIONS:  # refused before any work
        raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}; got {head_fusion!r}")
    _check_ratio(discard_ratio)
    images = check_images(images)
    grid = grid_of(model, *images.shape[-2:])
    prefix = model.num_prefix_tokens
    out = [rollout_map(rollout(maps, prefix, head_fusion, discard_ratio), prefix, grid).cpu()
           for maps in attention_chunks(model, images, batch_size)]
    return torch.cat(out)


def _check_ratio(discard_ratio: float) -> None:
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
