"""Position embedding similarity: what the position embeddings have learned about 2D layout.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021
(arXiv:2010.11929), section 4.5, figure 7 (center) and figure 10: the cosine
similarity between the position embedding of each patch and those of all
other patches. Trained ViTs learn embeddings whose similarity falls off with
distance and shows row-column structure, although nothing in a learned table
tells the model that the patches lie on a grid.

Works for learned tables (``pos_embed``, (1, prefix + N, D)), for the fixed
sin-cos table (``pos_table``) and for 2-D learned embeddings
(pos_embed='learned_2d': the per-patch embeddings concat(X[col], Y[row]) as the
model adds them); the class token's entry is left out. The table is the one of
the build-time grid (``grid_size()``). A model with pos_embed='none' or
'relative' has no per-patch embedding and is refused (``NotAnalysable``).
"""

from __future__ import annotations

import torch

from ._common import NotAnalysable, model_name, require_vit


def patch_position_table(model) -> torch.Tensor:
    """The patches' position embeddings (N, D), raster order, class-token entry dropped."""
    require_vit(model, "position embedding similarity")
    kind = getattr(model, "pos_embed_type", None)
    if kind == "none":
        raise NotAnalysable(f"model {model_name(model)!r}: pos_embed='none' has no position embedding "
                            f"to compare")
    if kind == "relative":
        raise NotAnalysable(f"model {model_name(model)!r}: pos_embed='relative' has no per-patch embedding "
                            f"(its position information is a bias on the attention logits)")
    if kind == "learned_2d":  # assembled from the X and Y tables by the model itself
        table = model.position_embeddings()
    else:
        table = getattr(model, "pos_embed", None)
    if table is None:
        table = getattr(model, "pos_table", None)  # the fixed sin-cos table is a buffer
    if table is None:
        raise NotAnalysable(f"model {model_name(model)!r} has no position embedding table "
                            f"(neither pos_embed nor pos_table)")
    gh, gw = model.grid_size()
    table = table.detach().reshape(-1, table.shape[-1])[model.num_prefix_tokens:]
    if table.shape[0] != gh * gw:
        raise ValueError(f"position table of {table.shape[0]} patches does not fit the {gh}x{gw} grid")
    return table


def pos_embed_similarity(model) -> torch.Tensor:
    """Cosine similarity (N, N) on the CPU between the position embeddings of every two
    patches (raster order of the ``grid_size()`` grid; the class token's entry is
    left out): symmetric, ones on the diagonal. Raises ``UserError`` for a CNN."""
    e = patch_position_table(model).double().cpu()
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)  # an all-zero row gives similarity 0
    return (e @ e.T).float()
