"""Load pretrained weights from other codebases into a vitlab model (a ViT,
a hybrid, a ResNet).

``load_pretrained(model, source)`` reads a file (``.npz``, ``.safetensors``,
``.pth``/``.pt``/``.bin``, or a Hugging Face model folder) or takes a state
dict, detects its layout, maps every tensor to vitlab's names with one
explicit key map per layout, checks every shape, and loads it. With
``report=True`` it also returns a ``LoadReport``: what it changed, one line
each (``report.changes``), e.g. ``head replaced: 1000 classes -> 10 classes,
zero-initialised`` and ``position embeddings resampled from grid 14x14 to
24x24 (bicubic)``; ``str(report)`` is all of it on one line.

Layouts (detected from the key names):

- ``timm`` / ``vitlab``: vitlab's parameter names are timm's
  (``patch_embed.proj``, ``cls_token``, ``dist_token``, ``pos_embed``,
  ``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma``, ``norm``, ``fc_norm``,
  ``head``, ``head_dist``, ``pre_logits.fc``; a hybrid's CNN under
  ``patch_embed.backbone``), so the map is the identity: timm's plain ViTs,
  average-pooled ones with ``fc_norm`` (with or without a class token: MAE
  and BEiT-style fine-tuning), layer scale (DeiT-III, DINOv2; Facebook's
  ``blocks.N.gamma_1``/``gamma_2`` are renamed), and DeiT distilled models
  load into a vitlab ViT built with the matching options (``fc_norm``,
  ``class_token``, ``layer_scale``, ``distilled``). A ``mask_token`` (masked
  pretraining only) is dropped. A vitlab training
  checkpoint ``{"model": state_dict, "model_args": {...}, "grid_size": ...}``
  and timm's ``{"state_dict": ...}`` are unwrapped; ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes are removed.
- ``torchvision`` / own names: a model whose own parameter names the
  checkpoint uses (torchvision's ResNet state dicts for vitlab's ResNets,
  whose names are torchvision's) loads by identity.
- ``hf``: Hugging Face transformers ``ViTForImageClassification`` /
  ``ViTModel``, with or without the ``vit.`` prefix, and
  ``DeiTForImageClassificationWithTeacher`` (``deit.``; ``distillation_token``,
  ``cls_classifier``, ``distillation_classifier``), in the names written to
  files (``encoder.layer.N.attention.attention.query``) and in the names of
  transformers >= 5 in memory (``layers.N.attention.q_proj``). Separate q, k, v
  are concatenated into ``qkv``; ``pooler.dense`` (dense + tanh on the class
  token) is the representation layer ``pre_logits.fc``; ``classifier`` is the
  head.
- ``google``: the original ``.npz`` of google-research/vision_transformer
  (``Transformer/encoderblock_N/MultiHeadDotProductAttention_1/query/kernel``,
  ``embedding/kernel``, ``cls``, ``Transformer/posembed_input/pos_embedding``,
  ``Transformer/encoder_norm``, ``pre_logits``, ``head``), optionally under
  ``opt/target/``.
  The hybrid R50+ViT-B/16 file (``R50+ViT-B_16.npz``) adds the ResNet-v2
  stem: ``conv_root``, ``gn_root``, ``block{i}/unit{j}/conv{1,2,3}``,
  ``gn{1,2,3}``, ``conv_proj``, ``gn_proj``; its ``embedding`` is then the 1x1
  projection of the CNN's feature map.
- ``big_vision``: google-research/big_vision ``.npz`` (``params/`` or
  ``params/img/`` prefix; blocks ``LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0``; a top-level ``pos_embedding`` without a class-token
  entry, the class token being concatenated after the position embedding;
  layers stacked along a leading axis when trained with ``scan``). Pooling
  'gap' maps to vitlab's 'avg' (final norm, then mean) and 'tok' to 'cls';
  the attention-pooling head ('map') has no vitlab counterpart.

Refused, in one line naming what is not supported (``UserError``, whatever
``strict``): ViTs with a feature vitlab's ViT cannot represent (register
tokens, q/k norm, a norm before the blocks, an attention-pooling head, a
SwiGLU MLP, norms inside the branches, a norm after the patch embedding), and
the state dicts of other architectures (Swin, ConvNeXt, BEiT, EVA, CLIP,
torchvision's ViT, a ResNet into a ViT, ...) unless the model has their names.

What happens when the checkpoint and the model differ (each case is a line
of the report's ``changes``, and logged with the ``logging`` module, logger
``vitlab.weights``):

- Patch grid: the patch part of the position embedding is resampled to the
  model's grid by 2D interpolation (bicubic by default, with antialiasing, as
  timm's ``resample_abs_pos_embed``); the class-token entry is kept aside. The
  checkpoint's grid is taken from a vitlab checkpoint's ``grid_size`` (older
  checkpoints: from ``model_config``), else
  the model's grid when the token counts agree, else assumed square.
- Class token: a checkpoint with a class token loaded into a model without
  one (pool='avg', class_token unset) drops the class token and the class
  entry of ``pos_embed``. A position table without prefix entries (big_vision,
  timm ``no_embed_class`` as DeiT-III) gives the model's prefix tokens zero
  position embeddings, which is what those models compute.
- Distillation token: a DeiT distilled checkpoint loaded into a model that is
  not distilled drops ``dist_token``, its ``pos_embed`` entry and
  ``head_dist``. The model is then the ViT without the token: its logits are
  not the distilled model's class-head output, since the class token no
  longer attends to the distillation token. A distilled model needs a
  distilled checkpoint.
- Head (any model: the layer ``get_classifier()`` returns, ``head`` or a
  ResNet's ``fc``; with it a distilled ViT's ``head_dist``): a head whose
  class count differs from the model's is not loaded; the model keeps a
  zero-initialised head (``model.zero_head()``), the paper's fine-tuning
  rule. So does a model loaded from a checkpoint without a head.
- Input channels (any model: its ``first_conv``, the ViT's patch embedding,
  a ResNet's or hybrid's stem): filters for another number of input
  channels are adapted: summed over the colour channels for a one-channel
  model (grey images such as Fashion-MNIST), repeated cyclically and rescaled
  otherwise (as timm's ``adapt_input_conv``).
- Representation layer: a ``pre_logits`` layer absent from the model is
  dropped, and the head trained on top of it is zero-initialised too.
- Any other tensor whose shape differs raises ``UserError`` naming the key and
  both shapes. With ``strict=True`` (default) tensors the model lacks, or model
  tensors the checkpoint lacks, raise too, naming the option that differs
  where it is known (``fc_norm``, ``layer_scale``, ``distilled``, ...);
  ``strict=False`` logs them and keeps the model's values.

``weights_normalisation(source)`` (``vitlab.weights.norm``) says which input
mean and std the weights were trained with, where the file or its layout
says so.

Loading never executes pickled code: ``torch.load(weights_only=True)``,
``safetensors`` and ``numpy.load(allow_pickle=False)``. Note the Google and
big_vision models use the tanh approximation of GELU and HF's converted
configs LayerNorm eps 1e-12, so their logits differ from vitlab's (exact GELU,
eps 1e-6) in the last digits; timm's and vitlab's agree exactly.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from torch import nn

from .fit import fit
from .layouts import map_layout
from .norm import weights_normalisation
from .read import read, unwrap
from .report import Changes, LoadReport

__all__ = ["load_pretrained", "weights_normalisation", "LoadReport"]

_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def load_pretrained(model: nn.Module, source: Any, *, strict: bool = True, interpolation: str = "bicubic",
                    report: bool = False) -> nn.Module | tuple[nn.Module, LoadReport]:
    """Load ``source`` (a path or a state dict, in timm, Hugging Face, Google
    ``.npz``, big_vision or vitlab layout) into ``model`` and return it; with
    ``report``, return ``(model, LoadReport)``: what was changed to make the
    weights fit, one line each (``report.changes``; empty when every tensor
    loaded as it is).

    Args:
        model: a vitlab model (``create_model``). ViTs and hybrids get the
            ViT rules (position embeddings, class token, representation
            layer); every model gets the head and input-channel rules and the
            shape checks. Any other module loads a checkpoint in its own names.
        source: path to ``.npz``, ``.safetensors``, ``.pth``/``.pt``/``.bin``
            (or a Hugging Face folder holding ``model.safetensors`` or
            ``pytorch_model.bin``), or a state dict / vitlab checkpoint dict.
        strict: raise when tensors are missing or left over (besides the head
            and representation-layer rules in the module docstring).
        interpolation: 'bicubic' (default), 'bilinear' or 'nearest', for
            resampling position embeddings to the model's patch grid.
        report: also return the ``LoadReport``.

    Raises:
        UserError: missing or corrupt file, unknown layout, a shape mismatch
            (the message names the key and both shapes), or with ``strict``
            missing / unexpected tensors.
    """
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    state, meta, origin = read(source)
    state = unwrap(state, meta, origin)
    note = Changes()
    if isinstance(meta.get("objective"), dict) and meta["objective"]:  # a vitlab masked-patch-prediction run
        note("left out the masked-patch-prediction parts of the pre-training run (%s)",
             ", ".join(sorted(meta["objective"])), level=logging.WARNING)
    layout, mapped, unused = map_layout(state, origin, set(model.state_dict()), note)
    loaded = fit(model, mapped, meta, layout, origin, unused, strict, interpolation, note)
    dataset = meta.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("classes"), (list, tuple)):
        loaded = replace(loaded, classes=tuple(map(str, dataset["classes"])))
    return (model, loaded) if report else model


