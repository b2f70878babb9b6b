"""The two kinds of dataset every reader returns.

``TensorImageDataset``: a whole dataset in memory, a uint8 tensor
``.images`` (N, C, H, W) with int64 ``.targets`` (N,) (CIFAR in both
layouts, the IDX datasets). ``ImageFileDataset``: images read from files per
item (``.paths`` and ``.targets``; Tiny ImageNet, image folders), which
``load_into_memory`` turns into the first kind (the CIFAR-10 JPEG copy).

Both give items (transform(image), int label), the transform getting a
uint8 ``tv_tensors.Image`` (C, H, W), and have ``.classes``, ``.transform``
and ``.subset(indices)`` (what ``splits.py`` works on).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import UserError
from .images import read_image, read_images

__all__ = ["TensorImageDataset", "ImageFileDataset"]


class TensorImageDataset(Dataset):
    """A whole dataset in memory. ``images``: uint8 (N, C, H, W); ``targets``:
    int64 (N,). Items: (transform(image), int label); the transform gets a
    uint8 ``tv_tensors.Image`` (C, H, W)."""

    def __init__(self, images: torch.Tensor, targets, classes: Sequence[str], transform=None):
        self.images = images
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i].as_subclass(tv_tensors.Image)
        if self.transform is not None:
            x = self.transform(x)
        return x.as_subclass(torch.Tensor), int(self.targets[i])

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(self.images[indices], self.targets[indices], self.classes, self.transform)

    def __repr__(self) -> str:
        return f"TensorImageDataset({len(self)} images {tuple(self.images.shape[1:])}, {len(self.classes)} classes)"


class ImageFileDataset(Dataset):
    """Images read from files per item. ``paths``: list of file paths;
    ``targets``: int64 (N,). Items: (transform(image), int label); the
    transform gets a uint8 ``tv_tensors.Image`` (channels, H, W)."""

    def __init__(self, paths: list[str], targets, classes: Sequence[str], transform=None, channels: int = 3):
        self.paths = list(paths)
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = list(classes)
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = read_image(self.paths[i], self.channels).as_subclass(tv_tensors.Image)
        if self.transform is not None:
            x = self.transform(x)
        return x.as_subclass(torch.Tensor), int(self.targets[i])

    def subset(self, indices: torch.Tensor) -> ImageFileDataset:
        return ImageFileDataset([self.paths[i] for i in indices.tolist()], self.targets[indices],
                                self.classes, self.transform, self.channels)

    def load_into_memory(self) -> TensorImageDataset:
        """Decode every file once (all images must have one size)."""
        images = read_images(self.paths, self.channels)
        if not images:
            return TensorImageDataset(torch.empty(0, self.channels, 0, 0, dtype=torch.uint8), self.targets,
                                      self.classes, self.transform)
        shape = images[0].shape
        for p, img in zip(self.paths, images, strict=True):
            if img.shape != shape:
                raise UserError(f"image {p} is {img.shape[2]}x{img.shape[1]}, the others "
                                f"{shape[2]}x{shape[1]}: all images of this dataset must have one size")
        return TensorImageDataset(torch.stack(images), self.targets, self.classes, self.transform)

    def __repr__(self) -> str:
        return f"ImageFileDataset({len(self)} files, {len(self.classes)} classes)"
