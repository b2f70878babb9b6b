"""The device path of training, checked on the CPU: the batches of a device-resident epoch are
those of the DataLoader path (augmentation off) and of the planned batched path; the masked
augmentation (what a GPU runs, no host read) gives the grouped path's pixels; an epoch reads the
host at most once per ``train.check_every`` steps; torch.compile runs the short batches
uncompiled; a missing C compiler is one line."""

from __future__ import annotations

import collections
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

import vitlab.data.batch_augment as batch_augment
import vitlab.train.engine as engine
from tiny import TINY_MODEL, make_fashion
from vitlab import config as cfgmod
from vitlab.config import DataConfig
from vitlab.data import DatasetInfo, TensorImageDataset, build_train_transform
from vitlab.data.augment_ops import OP_NAMES, apply_ops
from vitlab.data.transforms import dataset_eval_transform
from vitlab.data.loader import TensorBatches, make_batches, place_data
from vitlab.errors import UserError
from vitlab.run import runtime

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def info_for(channels: int = 3, size: int = 32) -> DatasetInfo:
    return DatasetInfo("test", 10, channels, size, (0.5,) * channels, (0.25,) * channels, [str(i) for i in range(10)])


def dataset(n: int = 60, channels: int = 3, size: int = 32) -> TensorImageDataset:
    g = torch.Generator().manual_seed(n)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return TensorImageDataset(images, torch.arange(n) % 10, [str(i) for i in range(10)])


def test_the_masked_augmentation_gives_the_grouped_pixels():
    """Every operation at several magnitudes, mixed in one batch: the same result whether images are
    grouped by operation (the CPU) or every operation runs on the whole batch (a GPU)."""
    g = torch.Generator().manual_seed(0)
    for channels in (1, 3):
        x = torch.randint(0, 256, (64, channels, 20, 24), generator=g).float()
        op = torch.randint(-1, len(OP_NAMES), (64,), generator=g)
        mag = torch.rand(64, generator=g, dtype=torch.float64) * 0.6 - 0.3
        mag = torch.where(op == OP_NAMES.index("Posterize"), torch.full_like(mag, 6.0), mag)
        mag = torch.where(op == OP_NAMES.index("Rotate"), mag * 100, mag)
        mag = torch.where(op == OP_NAMES.index("Solarize"), mag.abs() + 0.3, mag)
        grouped = apply_ops(x.clone(), op, mag, True, masked=False)
        masked = apply_ops(x.clone(), op, mag, True, masked=True)
        assert torch.equal(grouped, masked)
        assert not torch.equal(grouped, x)  # the operations did something


def test_device_batches_equal_the_dataloader_batches_without_augmentation():
    """Same seed and epoch, augmentation off: the tensor path (what a device-resident epoch indexes)
    gives the DataLoader path's images and labels in the same order."""
    ds, info = dataset(50), info_for()
    ds.transform = build_train_transform(DataConfig(), info)
    kw = dict(train=True, info=info, device="cpu", seed=5, epoch=2)
    tensor = make_batches(ds, 16, data_cfg=DataConfig(), **kw)
    loader = make_batches(ds, 16, data_cfg=DataConfig(device_augment=False), **kw)
    assert isinstance(tensor, TensorBatches) and not isinstance(loader, TensorBatches)
    pairs = list(zip(tensor, loader, strict=True))
    assert len(pairs) == 4
    for (a, ya), (b, yb) in pairs:
        assert torch.equal(ya, yb)
        assert torch.allclose(a, b, atol=1e-6)
    # evaluation (always the tensor path in memory): the items of the set, in order
    ds.transform = dataset_eval_transform(DataConfig(), info, True)
    evaluated = list(make_batches(ds, 16, data_cfg=DataConfig(), **{**kw, "train": False}))
    x, y = torch.cat([b[0] for b in evaluated]), torch.cat([b[1] for b in evaluated])
    items = [ds[i] for i in range(50)]
    assert torch.equal(y, torch.tensor([t for _, t in items]))
    assert torch.allclose(x, torch.stack([img for img, _ in items]), atol=1e-6)


def test_the_epoch_plan_gives_the_per_batch_augmentation():
    """A batch of a planned epoch is what the transforms give its images with their own draws."""
    ds, info = dataset(40), info_for()
    cfg = DataConfig(crop_padding=4, hflip=True, auto_augment="cifar10", rand_augment=2, random_erasing=0.5)
    tb = TensorBatches(ds, 16, train=True, data_cfg=cfg, info=info, device="cpu", seed=3, epoch=1)
    g = torch.Generator().manual_seed(3 * 1_000_003 + 1)
    torch.randperm(40, generator=g)  # the order comes first
    params = tb.transforms.draw(40, g)
    for sel, (x, y) in zip(tb.batches, tb):
        direct = tb.transforms(ds.images[sel], {k: v[sel] for k, v in params.items()})
        assert torch.equal(x, direct) and torch.equal(y, ds.targets[sel])


def test_place_data_on_the_cpu_and_refusals():
    ds, info = dataset(20), info_for()
    assert place_data(ds, ds, DataConfig(), info, "cpu") == \
        "training images: in memory, augmented in batches on the training device"
    assert "DataLoader" in place_data(ds, ds, DataConfig(device_augment=False), info, "cpu")
    with pytest.raises(UserError, match="device_resident=true needs the batched path"):
        place_data(ds, ds, DataConfig(device_augment=False, device_resident=True), info, "cpu")


@pytest.fixture
def trainer(tmp_path):
    def make(**train) -> engine.Trainer:
        make_fashion(tmp_path / "data", 128, 32)
        cfg = {"model": TINY_MODEL,
               "data": {"name": "fashion_mnist", "root": str(tmp_path / "data"), "crop_padding": 2, "hflip": True,
                        "auto_augment": "cifar10", "rand_augment": 2, "random_erasing": 0.25},
               "train": {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False, "loggers": [],
                         "device": "cpu", **train}}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        return engine.Trainer(cfgmod.load(tmp_path / "c.yaml"), tmp_path / f"run{len(list(tmp_path.iterdir()))}")
    return make


HOST_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__")


def count_host_reads(monkeypatch) -> collections.Counter:
    """Calls, made by vitlab's own code, of the tensor methods that make the host wait for a device."""
    counts = collections.Counter()
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if f"{Path('vitlab')}" in caller and "tests" not in caller:
                counts[_name] += 1
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("every", [1, 3])
def test_an_epoch_reads_the_host_once_per_check(trainer, monkeypatch, every):
    """128 images at batch 16: 8 steps. With the masked augmentation (what runs on a GPU) the epoch's
    only host reads are the loss checks, one per `every` steps and one at the end (the count is exact,
    so the counter is seen to see them)."""
    t = trainer(check_every=every)
    real = batch_augment.apply_ops
    monkeypatch.setattr(batch_augment, "apply_ops", lambda x, op, mag, integer: real(x, op, mag, integer, masked=True))
    counts = count_host_reads(monkeypatch)
    row = t._train_epoch()
    monkeypatch.undo()
    assert row["train_images"] == 128 and t.steps_per_epoch == 8
    assert counts == {"tolist": math.ceil(8 / every) + 1}, counts


def test_compile_runs_the_short_last_batch_uncompiled(trainer, monkeypatch):
    """100 training images at batch 16: six full batches compiled, the last 4 images eager."""
    t = trainer()
    calls = collections.Counter()
    t.net = lambda x: (calls.__setitem__("compiled", calls["compiled"] + 1), t.model(x))[1]
    t.eager_net = lambda x: (calls.__setitem__("eager", calls["eager"] + 1), t.model(x))[1]
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    t._step(x, y, True, 1)
    t._step(torch.randn(16, 1, 28, 28), torch.arange(16) % 10, True, 1)
    assert calls == {"eager": 1, "compiled": 1}


def test_compile_without_a_c_compiler_is_one_line(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(UserError, match="train.compile needs a C compiler"):
        runtime.require_compiler()
