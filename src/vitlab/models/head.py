"""The classification head every model shares: a linear layer over
``num_features``, named ``head`` (ViTs) or ``fc`` (torchvision's ResNets, and
the VT-ResNets beside them), with the protocol's head methods."""

from __future__ import annotations

from torch import nn


class LinearHead:
    """Mixin for an ``nn.Module`` whose classifier is the attribute ``head_name``."""

    head_name = "head"

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.head_name)

    def zero_head(self) -> None:
        head = self.get_classifier()
        if isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Swap the head for a zero-initialised one with ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        if hasattr(self, "model_args"):  # a checkpoint of this model rebuilds it with the new head
            self.model_args["num_classes"] = num_classes
        device = next(self.parameters()).device
        setattr(self, self.head_name,
                nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity())
        self.zero_head()
