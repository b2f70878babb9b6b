"""Linear probing and partial fine-tuning: which parameters train.

``model.freeze: backbone`` leaves only the classification head trainable
(linear probing). ``model.freeze_blocks: N`` freezes a ViT's input side, the
patch embedding (a hybrid's CNN stem with it), the class and distillation
tokens and the position embeddings, and its first N transformer blocks; the
later blocks, the final norm and the head train.

Frozen parameters have ``requires_grad`` off, so the optimizer gets neither
them nor state for them (``vitlab.train.optim``) and no weight decay moves
them: they end a run bit-identical. Batch-norm layers whose parameters are all
frozen are kept in eval mode while training, so their running statistics stay
those of the weights too.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError

FREEZE = (None, "backbone")
_TOP = ("norm", "fc_norm", "head", "head_dist", "pre_logits")  # a ViT's modules after the blocks


def apply_freeze(model: nn.Module, freeze: str | None, freeze_blocks: int) -> int:
    """Turn ``requires_grad`` off where the config says; returns how many
    parameters (elements) were frozen."""
    if freeze not in FREEZE:
        raise UserError(f"unknown model.freeze {freeze!r}; choose backbone, or leave it unset")
    if freeze_blocks < 0:
        raise UserError("model.freeze_blocks must be 0 or more")
    if freeze and freeze_blocks:
        raise UserError("give model.freeze=backbone or model.freeze_blocks, not both")
    frozen = set()
    if freeze == "backbone":
        heads = [model.get_classifier()] + [m for n, m in model.named_children() if n == "head_dist"]
        keep = {id(p) for h in heads for p in h.parameters()}
        frozen = {n for n, p in model.named_parameters() if id(p) not in keep}
    elif freeze_blocks:
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, (nn.Sequential, nn.ModuleList)):
            raise UserError(f"model.freeze_blocks needs a model with transformer blocks (a ViT); "
                            f"{getattr(model, 'model_name', type(model).__name__)!r} has none "
                            "(model.freeze=backbone trains only its head)")
        if freeze_blocks > len(blocks):
            raise UserError(f"model.freeze_blocks={freeze_blocks} but the model has {len(blocks)} blocks")
        for name, _ in model.named_parameters():
            head = name.split(".")[0]
            if head == "blocks":
                if int(name.split(".")[1]) < freeze_blocks:
                    frozen.add(name)
            elif head not in _TOP:
                frozen.add(name)
    count = 0
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
            count += p.numel()
    return count


def frozen_norms_to_eval(model: nn.Module) -> None:
    """After ``model.train()``: batch-norm layers with only frozen parameters back to eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
