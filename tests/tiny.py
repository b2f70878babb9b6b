"""Tiny datasets in their real file formats and a tiny ViT, shared by the training and CLI tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

TINY_MODEL = {"name": "vit", "img_size": 28, "patch_size": 7, "embed_dim": 32, "depth": 1, "num_heads": 2,
              "mlp_dim": 64}


def write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def make_fashion(root: Path, n_train: int = 64, n_test: int = 32) -> dict:
    """A learnable Fashion-MNIST in the official gzipped IDX files: class c is a bright band at
    rows 2c..2c+7. Returns {"train": (images, labels), "t10k": (images, labels)}."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c:2 * c + 8] += 150
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = images.astype(np.uint8), labels
    return arrays
