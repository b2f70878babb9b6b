"""Throughput of the training augmentation: the batched path (whole batches
on the training device, ``vitlab.data.batch_augment``) against the per-image
DataLoader path (torchvision.transforms.v2 per image), on the same in-memory
images, in one process.

The pipeline is the CIFAR-10 preset's (configs/cifar10_vit.yaml): random crop
with 4 px zero padding, horizontal flip, AutoAugment (CIFAR-10 policy),
normalisation. Both paths go through ``vitlab.data.loader.make_batches`` as
the trainer calls it (``data.device_augment`` null, then false), and each
timing is one pass over the images, batches delivered on ``--device``; the
paths alternate within each round, and the medians over rounds are reported.
ratio = per-image time / batched time.

    python benchmarks/bench_augment.py --threads 1                 # CPU
    python benchmarks/bench_augment.py --device cuda --workers 8   # GPU

Images: the CIFAR-10 JPEG copy (``--data``, default /tmp/cifar/cifar10-jpeg,
``--n`` images drawn at random from its training split and decoded into
memory) when it is there, otherwise random uint8 32x32 images (the same
work per image). Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from vitlab.data import TensorImageDataset, build_datasets, build_train_transform
from vitlab.data import DatasetInfo
from vitlab.config import DataConfig
from vitlab.data.loader import TensorBatches, make_batches

PRESET = dict(crop_padding=4, hflip=True, auto_augment="cifar10")


def load(args) -> tuple[TensorImageDataset, DatasetInfo, str]:
    if Path(args.data).is_dir():
        cfg = DataConfig(name="cifar10", root=args.data, train_subset=args.n, subset_mode="random", **PRESET)
        train, _, info = build_datasets(cfg, seed=0)
        return train, info, f"CIFAR-10 JPEG copy, {len(train)} training images decoded into memory"
    g = torch.Generator().manual_seed(0)
    info = DatasetInfo("synthetic", 10, 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), [str(i) for i in range(10)])
    ds = TensorImageDataset(torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=g),
                            torch.arange(args.n) % 10, info.classes)
    ds.transform = build_train_transform(DataConfig(**PRESET), info)
    return ds, info, f"{args.n} random uint8 3x32x32 images ({args.data} not found)"


def one_pass(ds, info, args, device_augment, epoch: int) -> float:
    """Seconds for one pass over ``ds``: every batch augmented and on the device."""
    cfg = DataConfig(**PRESET, device_augment=device_augment)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    batches = make_batches(ds, args.batch, train=True, data_cfg=cfg, info=info, device=dev, seed=0, epoch=epoch,
                           num_workers=args.workers)
    assert isinstance(batches, TensorBatches) == (device_augment is None)
    for x, _ in batches:
        pass
    if dev.type == "cuda":
        torch.cuda.synchronize()
    assert x.device.type == dev.type
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--n", type=int, default=5000, help="images per pass")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of the per-image path")
    ap.add_argument("--data", default="/tmp/cifar/cifar10-jpeg")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds, info, what = load(args)
    n = len(ds)
    one_pass(ds, info, args, None, epoch=99)  # warm-up (first CUDA kernels, allocator)
    times = {"batched": [], "per-image": []}
    for r in range(args.rounds):
        times["batched"].append(one_pass(ds, info, args, None, epoch=r))
        times["per-image"].append(one_pass(ds, info, args, False, epoch=r))
    dev = args.device if args.device == "cpu" else f"{args.device} ({torch.cuda.get_device_name(args.device)})"
    print(f"data: {what}")
    print(f"pipeline: random crop (pad 4), hflip, AutoAugment cifar10, normalise; batch {args.batch}, "
          f"{args.rounds} rounds")
    print(f"device: {dev}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.workers} DataLoader workers; {platform.processor() or platform.machine()}")
    print(f"{'path':<10} {'images/s (median)':>18} {'s per pass (min..max)':>24}")
    for name, t in times.items():
        print(f"{name:<10} {n / statistics.median(t):>18,.0f} {min(t):>11.2f} .. {max(t):<10.2f}")
    ratio = statistics.median(times["per-image"]) / statistics.median(times["batched"])
    paired = statistics.median(p / b for p, b in zip(times["per-image"], times["batched"]))
    print(f"ratio per-image / batched time: {ratio:.1f}x (median of per-round ratios {paired:.1f}x)")


if __name__ == "__main__":
    main()
