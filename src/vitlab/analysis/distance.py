"""Mean attention distance: how far across the image each head integrates information.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021
(arXiv:2010.11929), section 4.5, figure 7 (right) and figure 11: for each
head, the distance in image space between a query patch and the key patches,
weighted by the attention weights, averaged over the query patches and over
the images; the analogue of a CNN's receptive field size. Some heads attend
globally already in the lowest layers, others stay local.

Here, for one layer and head with softmax weights a (B, N, N):

    P    = a[:, prefix:, prefix:]               patch queries x patch keys (B, n, n)
    P    = P / P.sum(-1)                         rows renormalised (see below)
    dist = sum_k P[q, k] * d(q, k)               (B, n) pixels, per query patch
    mean over the n query patches and the B images

d(q, k) is the Euclidean distance between the two patches' positions in input
pixels: the grid offsets times the patch size in pixels along each axis (the
patch size is the input size over the grid, so a hybrid's token counts as a
patch of its CNN's output stride).

The class token is left out as query (it has no position) and as key. The
patch block's rows ARE renormalised after the class-token column is dropped:
the class token has no position, and counting the mass a head puts on it as
distance 0 would make a head that parks its attention on the class token look
local. With the renormalisation the value is the expected distance under the
head's attention distribution over the patches, whatever share of the
attention goes to the class token (that share is a different property of the
head). Without a class token (pool='avg') nothing is dropped and the rows
already sum to 1.
"""

from __future__ import annotations

import torch

from ._common import attention_chunks, check_images, grid_of, patch_pixels, require_vit


def patch_distances(grid: tuple[int, int], patch_px: tuple[float, float]) -> torch.Tensor:
    """Pixel distance between every pair of patches of a (gh, gw) grid, (gh*gw, gh*gw),
    patches in raster order (as the tokens)."""
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64) * patch_px[0],
                                torch.arange(gw, dtype=torch.float64) * patch_px[1], indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], dim=1)  # (n, 2) pixel offsets of the patches
    return torch.cdist(pos, pos)


def mean_attention_distance(model, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Mean attention distance in input pixels, (layers, heads), on the CPU: per head,
    the attention-weighted distance between query and key patches, averaged over
    the query patches and over ``images`` (B, C, H, W, normalised as the model takes
    them; the paper used 128 images). The class token is neither query nor key and
    the patch rows are renormalised (see the module docstring). Images are run in
    eval mode, ``batch_size`` at a time. Raises ``UserError`` for a CNN."""
    require_vit(model, "mean attention distance")
    images = check_images(images)
    hw = tuple(images.shape[-2:])
    grid = grid_of(model, *hw)
    prefix = model.num_prefix_tokens
    dist = patch_distances(grid, patch_pixels(hw, grid))  # (n, n)
    total = None  # (layers, heads): sum over images and query patches
    for maps in attention_chunks(model, images, batch_size):
        d = dist.to(maps[0].device)
        sums = []
        for attn in maps:
            p = attn[:, :, prefix:, prefix:].double()  # (b, heads, n, n)
            p = p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
            sums.append((p * d).sum(dim=-1).sum(dim=(0, 2)))  # (heads,)
        chunk = torch.stack(sums).cpu()
        total = chunk if total is None else total + chunk
    return (total / (images.shape[0] * grid[0] * grid[1])).float()
