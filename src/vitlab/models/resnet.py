"""ResNet baselines: ResNet-18/34/50/101 on torchvision's blocks.

Paper: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
The blocks, layer names and initialisation are torchvision's
(``torchvision.models.resnet``; ResNet-50/101 are its v1.5, with the stride in
the 3x3 convolution), so torchvision's state dicts load one to one
(``vitlab.load_pretrained``) and give torchvision's logits.

What vitlab adds:

- ``stem='imagenet'``: torchvision's 7x7 stride-2 convolution and 3x3 stride-2
  max-pool (224 px inputs, output stride 32). ``stem='cifar'``: one 3x3
  stride-1 convolution and no max-pool, the usual choice for 32-64 px inputs
  (CIFAR: a 32 px image leaves the last stage at 4x4 instead of 1x1).
- ``in_chans``: the stem takes any number of channels (1 for Fashion-MNIST).
- ``zero_init_residual``: the last BatchNorm of each residual branch starts
  at zero, so each block starts as the identity (Goyal et al. 2017).
- vitlab's model protocol: ``forward_features`` gives the last feature map
  (B, C, H, W) before pooling, ``forward_head`` pools and classifies,
  ``reset_classifier`` makes a zero-initialised head.

    image (B, C, H, W)
      -> stem: conv 7x7/2 + BN + ReLU + max-pool 3x3/2   ('cifar': conv 3x3/1 + BN + ReLU)
      -> layer1 .. layer4 (layer2-4 halve the size)    forward_features returns this
      -> global average pool -> Linear head (``fc``)
"""

from __future__ import annotations

import torch
from torch import nn

from .head import LinearHead

STEMS = ("imagenet", "cifar")
BLOCKS = {"basic": 1, "bottleneck": 4}  # block kind -> channel expansion of its output


class ResNet(LinearHead, nn.Module):
    """torchvision's ResNet with a choice of stem and vitlab's model protocol.

    The network is built by ``torchvision.models.resnet.ResNet`` and its parts
    are taken over under their own names, so state dicts are torchvision's.
    torchvision is imported here, when a ResNet is built, not when vitlab is
    imported (it takes seconds to import).

    Args:
        block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50/101).
        layers: blocks per stage, e.g. [2, 2, 2, 2].
    """

    head_name = "fc"
    first_conv = "conv1"  # the input convolution, adapted by load_pretrained for other channel counts

    def __init__(self, block: str, layers: list[int], in_chans: int = 3, num_classes: int = 1000,
                 stem: str = "imagenet", zero_init_residual: bool = False):
        super().__init__()
        from torchvision.models import resnet as tv

        if stem not in STEMS:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be 1 or more, got {in_chans}")
        net = tv.ResNet(tv.BasicBlock if block == "basic" else tv.Bottleneck, layers,
                        num_classes=max(num_classes, 1), zero_init_residual=zero_init_residual)
        if stem == "cifar":
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        else:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        for name, module in net.named_children():  # conv1, bn1, relu, maxpool, layer1-4, avgpool, fc
            setattr(self, name, module)
        self.num_features = 512 * BLOCKS[block]
        self.num_classes = num_classes
        if num_classes <= 0:
            self.fc = nn.Identity()
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> last feature map (B, num_features, H/32, W/32) ('cifar' stem: H/8)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """Nothing besides biases and norm parameters (kept out by their shape)."""
        return set()


def _builder(block: str, layers: list[int], depth: int):
    def build(in_chans: int = 3, num_classes: int = 1000, stem: str = "imagenet",
              zero_init_residual: bool = False) -> ResNet:
        return ResNet(block, layers, in_chans, num_classes, stem, zero_init_residual)

    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = (f"ResNet-{depth}. stem: 'imagenet' (7x7/2 + max-pool) or 'cifar' (3x3/1, no pool); "
                     "zero_init_residual: last BN of each residual branch at zero.")
    return build


resnet18 = _builder("basic", [2, 2, 2, 2], 18)
resnet34 = _builder("basic", [3, 4, 6, 3], 34)
resnet50 = _builder("bottleneck", [3, 4, 6, 3], 50)
resnet101 = _builder("bottleneck", [3, 4, 23, 3], 101)
