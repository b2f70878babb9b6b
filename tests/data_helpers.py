"""Helpers of the data tests (test_data.py, test_data_files.py): writers of each dataset's real file
format, an image writer, the data config, and the one-line check of error messages."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlab.config import DataConfig
from vitlab.data import DATASETS


def write_idx(path: Path, arr: np.ndarray) -> None:
    """``arr`` as an IDX file of unsigned bytes (LeCun's MNIST format), gzipped when the name ends in .gz."""
    arr = np.asarray(arr, dtype=np.uint8)
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx(root: Path, gz: bool = True, n_train: int = 30, n_test: int = 12, seed: int = 0) -> dict:
    """The four IDX files of an MNIST-like dataset of random 28x28 images, labels 0, 1, ..., 9, 0, ...;
    returns {"train": (images, labels), "t10k": (images, labels)}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        arrays[prefix] = (images, labels)
    return arrays


def write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def make_cifar10_python(root: Path, per_batch: int = 4) -> dict:
    """root/cifar-10-batches-py/ as the official python archive, ``per_batch`` random images a batch;
    returns {batch file name: (data (N, 3072) uint8, labels)}."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        write_pickle(d / name, {"batch_label": name, "data": data, "labels": labels})
        batches[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_pickle(d / "batches.meta", {"label_names": names, "num_vis": 3072})
    return batches


def make_cifar100_python(root: Path) -> dict:
    """root/cifar-100-python/ as the official python archive (10 training, 5 test images); returns
    {file name: (data (N, 3072) uint8, fine labels)}."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    files = {}
    for name, n in (("train", 10), ("test", 5)):
        data, labels = rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(7 * j) % 100 for j in range(n)]
        write_pickle(d / name, {"data": data, "fine_labels": labels, "coarse_labels": [j % 20 for j in range(n)]})
        files[name] = (data, labels)
    write_pickle(d / "meta", {"fine_label_names": list(DATASETS["cifar100"].classes),
                              "coarse_label_names": [f"c{i}" for i in range(20)]})
    return files


def save_image(path: Path, size=(32, 32), mode="RGB", color=None, fmt=None) -> None:
    """A random (or ``color``) image of ``size`` (width, height) and ``mode`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8) if color is None else \
        np.full((size[1], size[0], channels), color, dtype=np.uint8)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path, format=fmt)


def make_tiny_imagenet(root: Path) -> list[str]:
    """root/tiny-imagenet-200/ in the official layout: 3 classes of 2 training JPEGs, 4 grey validation
    JPEGs named in val_annotations.txt; returns the wnids in the order of wnids.txt."""
    d = root / "tiny-imagenet-200"
    wnids = ["n02124075", "n01443537", "n09999999"]
    (d / "train").mkdir(parents=True)
    (d / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (d / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\n"
                                 "n00000001\tsomething else\n")  # n09999999 has no name: its wnid is used
    for w in wnids:
        for k in range(2):
            save_image(d / "train" / w / "images" / f"{w}_{k}.JPEG", (64, 64), fmt="JPEG")
        (d / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for k, w in enumerate(wnids + wnids[:1]):
        save_image(d / "val" / "images" / f"val_{k}.JPEG", (64, 64), mode="L", fmt="JPEG")  # grey ones too
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def one_line(e: pytest.ExceptionInfo) -> str:
    """The message of a raised error, which must be one line."""
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg
