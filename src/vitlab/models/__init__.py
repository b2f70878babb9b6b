"""Model definitions and the registry.

The model protocol: every registered model, whatever its family ('vit',
'hybrid', 'resnet'), is built by ``create_model(name, **kwargs)`` from a
builder with an explicit signature, and ``create_model`` records
``model.model_name`` and ``model.model_args`` (every argument, resolved), from
which each checkpoint rebuilds it. The trainer, ``vitlab compare``,
fine-tuning and the analyses rely on these members and on nothing
family-specific:

- ``forward(x) -> logits`` (B, num_classes).
- ``forward_features(x)``: tokens (B, N, D) for Transformers (normed, class
  token first where there is one); the last feature map (B, C, H, W) before
  pooling for CNNs.
- ``forward_head(features, pre_logits=False)``: pooling (and the
  representation layer) then the classifier; ``pre_logits=True`` stops before
  the classifier and returns (B, num_features).
- ``get_classifier()``: the classification layer; ``reset_classifier(n)``
  replaces it by a zero-initialised one with ``n`` outputs (0: none) and
  updates ``num_classes`` and ``model_args``.
- ``no_weight_decay() -> set[str]``: parameter names kept out of weight decay
  besides biases and norm parameters (which the optimizer leaves out by shape).
- ``num_classes``, ``num_features`` (the width ``forward_head`` classifies).
- ``first_conv``: name of the input convolution, whose filters
  ``load_pretrained`` adapts to another number of input channels.

ViT-only analyses also use ``attention_maps(x)`` and ``grid_size()``.
"""

from .registry import (create_model, list_models, model_defaults, model_description, model_family,
                       model_options, register)
from .vit import VisionTransformer

__all__ = ["create_model", "list_models", "model_defaults", "model_description", "model_family",
           "model_options", "register", "VisionTransformer"]
