"""Principal components of the patch-embedding filters.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021
(arXiv:2010.11929), section 4.5, figure 7 (left): the first 28 principal
components of the learned embedding filters of ViT-L/32 "resemble plausible
basis functions for a low-dimensional representation of the fine structure
within each patch".

The patch embedding is a linear map of the flattened patch: its weight
``patch_embed.proj.weight`` (D, C, p, p) holds D filters of C*p*p values.
The filters are the D samples: flattened to (D, C*p*p), centred on their
mean filter, and decomposed by SVD; the right singular vectors, largest
singular value first, are the principal components. A ViT with a plain
convolutional stem (``models/conv_stem.py``) has no patch filters; its filters
that see pixels are the first convolution's (3x3), analysed the same way. A
ResNet-v2 hybrid's projection is a 1x1 convolution over CNN feature channels,
not filters over image patches, and is refused.
"""

from __future__ import annotations

import torch

from ._common import NotAnalysable, model_name, require_vit


def filter_pca(model, k: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """(components (k, C, p, p), explained variance ratio (k,)), on the CPU; see
    ``patch_filter_components`` (a conv stem: of its first convolution's filters)."""
    require_vit(model, "patch filter components")
    weight = _pixel_filters(model)
    if weight is None:
        proj = getattr(getattr(model, "patch_embed", None), "proj", None)
        inputs = f" of {proj.in_channels} CNN feature channels" if isinstance(proj, torch.nn.Conv2d) else ""
        raise NotAnalysable(f"patch filter components need a ViT whose patch embedding sees image patches; "
                            f"model {model_name(model)!r} is a hybrid: its projection is a 1x1 convolution"
                            f"{inputs}, whose filters are not image patches")
    weight = weight.detach().cpu().double()
    d, shape = weight.shape[0], weight.shape[1:]
    flat = weight.reshape(d, -1)  # (D, C*p*p): one sample per filter
    limit = min(d - 1, flat.shape[1])  # centring D samples leaves at most D - 1 directions
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limit:
        raise ValueError(f"k must be an int from 1 to {limit} for {d} filters of {flat.shape[1]} values, got {k!r}")
    centred = flat - flat.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(D, Cpp), Cpp), orthonormal rows
    comps = vh[:k]
    # an SVD's signs are arbitrary: make each component's largest entry positive, so pictures are stable
    peak = comps.abs().argmax(dim=1, keepdim=True)
    comps = comps * comps.gather(1, peak).sign()
    var = s ** 2
    ratio = var[:k] / var.sum().clamp_min(torch.finfo(var.dtype).tiny)
    return comps.reshape(k, *shape).float(), ratio.float()


def patch_filter_components(model, k: int = 28) -> torch.Tensor:
    """The first ``k`` principal components (k, C, p, p) of the patch-embedding filters,
    on the CPU, largest variance first; orthonormal as flattened vectors. ``k`` is at
    most min(D - 1, C*p*p). Raises ``UserError`` for a CNN and, also a ``ValueError``,
    for a hybrid, whose 1x1 projection acts on CNN features."""
    return filter_pca(model, k)[0]


def filters_seen(model) -> str:
    """What ``filter_pca`` decomposes, in words, for titles."""
    embed = getattr(model, "patch_embed", None)
    if hasattr(embed, "pixel_filters"):
        k = "x".join(map(str, embed.pixel_filters.shape[-2:]))
        return f"first stem convolution's {k} filters"
    return "patch embedding filters"


def max_components(model) -> int:
    """The most principal components ``filter_pca`` can give for ``model`` (0 if none)."""
    w = _pixel_filters(model)
    return 0 if w is None else max(0, min(w.shape[0] - 1, w[0].numel()))


def _pixel_filters(model) -> torch.Tensor | None:
    """The filters that see pixels, (D, C, k, k): a conv stem's first convolution, a ViT's
    patch projection; None for a model without them (a ResNet-v2 hybrid's 1x1 projection
    sees CNN features)."""
    from ..models.layers import PatchEmbed

    embed = getattr(model, "patch_embed", None)
    if hasattr(embed, "pixel_filters"):
        return embed.pixel_filters
    return embed.proj.weight if isinstance(embed, PatchEmbed) else None
