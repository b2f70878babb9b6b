"""Model definitions and the registry.

The files: ``registry`` (names, families, ``create_model``), ``vit`` (the
Vision Transformer and its size table), ``layers`` (its building blocks and
init helpers), ``pos_embed`` (position embeddings and their resampling),
``hybrid`` (a ResNet-v2 stem, then a ViT), ``conv_stem`` (a plain
3x3-conv stem, then a ViT), ``resnet`` (torchvision's ResNets),
``vt`` (VT-ResNets), ``head`` (the shared classification head).

The model protocol: every registered model, whatever its family ('vit',
'hybrid', 'resnet', 'vt'), is built by ``create_model(name, **kwargs)`` from a
builder with an explicit signature, and ``create_model`` records
``model.model_name`` and ``model.model_args`` (every argument, resolved), from
which each checkpoint rebuilds it. The trainer, ``vitlab compare``,
fine-tuning and the analyses rely on these members and on nothing
family-specific:

- ``forward(x) -> logits`` (B, num_classes).
- ``forward_features(x)``: tokens (B, N, D) for Transformers (normed, prefix
  tokens first where there are any: the class token, then a DeiT's
  distillation token; a ViT with ``fc_norm`` norms after pooling instead, in
  ``forward_head``); the last feature map (B, C, H, W) before pooling for CNNs.
- ``forward_head(features, pre_logits=False)``: pooling (and ``fc_norm``, the
  representation layer) then the classifier; ``pre_logits=True`` stops before
  the classifier and returns (B, num_features). A distilled ViT returns the
  mean of its two heads.
- ``get_classifier()``: the classification layer; ``reset_classifier(n)``
  replaces it (and a distilled ViT's ``head_dist``) by a zero-initialised one
  with ``n`` outputs (0: none) and updates ``num_classes`` and ``model_args``.
- ``no_weight_decay() -> set[str]``: parameter names kept out of weight decay
  besides biases, norm parameters and layer scales (which the optimizer leaves
  out by shape): tokens (``cls_token``, ``dist_token``) and position tables.
- ``num_classes``, ``num_features`` (the width ``forward_head`` classifies).
- ``first_conv``: name of the input convolution, whose filters
  ``load_pretrained`` adapts to another number of input channels.

ViT-only analyses also use ``attention_maps(x)``, ``grid_size()`` and
``num_prefix_tokens`` (the tokens before the patches: 0, 1 or 2).
"""

from .registry import (create_model, list_models, model_defaults, model_description, model_family,
                       model_options, register)
from .vit import VisionTransformer

__all__ = ["create_model", "list_models", "model_defaults", "model_description", "model_family",
           "model_options", "register", "VisionTransformer"]
