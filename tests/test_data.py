"""vitlab.data: every dataset reader on tiny files in its real format, subsets,
transforms, Mixup/CutMix, error messages, bad files and the download path."""

from __future__ import annotations

import ast
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import vitlab.data.catalog as catalog_mod
from data_helpers import (cfg, make_cifar10_python, make_cifar100_python, make_idx, make_tiny_imagenet, one_line,
                          save_image, write_pickle)
from vitlab.data import (DATASETS, DatasetInfo, ImageFileDataset, TensorImageDataset, batch_mixer,
                         build_datasets, build_eval_transform, canonical_name, check_options, describe_transforms,
                         load_image, read_idx)
from vitlab.errors import UserError

FASHION = Path("/usr/share/datasets/fashion-mnist")
# torchvision 0.29 deprecates its image decoders (vitlab falls back to PIL when they go)
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


# --------------------------------------------------------------------------- the table


def test_table_is_consistent():
    assert set(DATASETS) == {"cifar10", "cifar100", "fashion_mnist", "mnist", "tiny_imagenet", "imagefolder"}
    for name, spec in DATASETS.items():
        assert len(spec.mean) == len(spec.std) == spec.in_chans, name
        if spec.classes is not None:
            assert len(spec.classes) == spec.num_classes, name
        for url, md5 in spec.downloads:
            assert url.startswith("http") and len(md5) == 32, name
    assert DATASETS["cifar100"].classes == tuple(sorted(DATASETS["cifar100"].classes))


def test_canonical_name_and_check_options():
    assert canonical_name("Fashion-MNIST") == "fashion_mnist" and canonical_name("cifar10") == "cifar10"
    with pytest.raises(UserError, match=r"unknown data.name 'cifar11' \(did you mean 'cifar10'\?\)") as e:
        canonical_name("cifar11")
    one_line(e)
    assert check_options(cfg(name="Tiny-ImageNet", auto_augment="imagenet")) == "tiny_imagenet"


def test_data_package_layers():
    """vitlab.data imports nothing above it (the config, the trainer, runs), not even for type checking;
    its modules import no private name of one another and form no cycle."""
    import vitlab.data
    folder = Path(vitlab.data.__file__).parent
    edges = {}
    for path in sorted(folder.glob("*.py")):
        deps = edges.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("vitlab") for a in node.names), (path.name, node.lineno)
            if not isinstance(node, ast.ImportFrom):
                continue
            module = node.module or ""
            if node.level == 0:
                assert not module.startswith("vitlab"), (path.name, node.lineno, module)
            elif node.level == 2:
                assert module in ("errors", "files"), (path.name, node.lineno, module)
            elif node.level == 1 and module:
                deps.add(module.split(".")[0])
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (path.name, node.lineno, private)
            else:
                raise AssertionError((path.name, node.lineno, "import level", node.level))
    edges.pop("__init__")
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, "import cycle: " + " -> ".join(path + (mod,))
        if mod not in done:
            for dep in edges.get(mod, ()):
                visit(dep, path + (mod,))
            done.add(mod)

    for mod in edges:
        visit(mod, ())


# --------------------------------------------------------------------------- IDX (fashion_mnist, mnist)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_idx_dataset(tmp_path, name, gz):
    arrays = make_idx(tmp_path, gz=gz)
    train, val, info = build_datasets(cfg(name=name, root=str(tmp_path)), seed=0)
    assert isinstance(train, TensorImageDataset) and isinstance(val, TensorImageDataset)
    assert (len(train), len(val)) == (30, 12)
    assert train.images.dtype == torch.uint8 and train.images.shape == (30, 1, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert train.targets.tolist() == arrays["train"][1].tolist()
    assert info == DatasetInfo(name, 10, 1, 28, DATASETS[name].mean, DATASETS[name].std,
                               list(DATASETS[name].classes))
    x, y = val[3]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and isinstance(y, int) and y == 3
    # eval transform = (x / 255 - mean) / std
    expected = (val.images[3].float() / 255 - info.mean[0]) / info.std[0]
    assert torch.allclose(x, expected, atol=1e-6)


def test_mean_std_override(tmp_path):
    make_cifar10_python(tmp_path)
    # one value stands for every channel; the eval transform and the info (stored in checkpoints) use it
    _, val, info = build_datasets(cfg(name="cifar10", root=str(tmp_path), mean=[0.5], std=[0.5]), seed=0)
    assert info.mean == info.std == (0.5, 0.5, 0.5)
    assert torch.allclose(val[0][0], val.images[0].float() / 255 * 2 - 1, atol=1e-6)
    _, _, info = build_datasets(cfg(name="cifar10", root=str(tmp_path), mean=[0.1, 0.2, 0.3]), seed=0)
    assert info.mean == (0.1, 0.2, 0.3) and info.std == DATASETS["cifar10"].std
    for bad in (dict(mean=[0.5, 0.5]), dict(std=[0.5, 0.0, 0.5])):
        with pytest.raises(UserError, match=f"data.{next(iter(bad))} must be one value or one per channel") as e:
            build_datasets(cfg(name="cifar10", root=str(tmp_path), **bad), seed=0)
        one_line(e)


def test_idx_in_torchvision_layout(tmp_path):
    make_idx(tmp_path / "FashionMNIST" / "raw")
    train, _, _ = build_datasets(cfg(name="fashion_mnist", root=str(tmp_path)), seed=0)
    assert len(train) == 30


def test_idx_bad_files(tmp_path):
    make_idx(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(UserError, match="missing: t10k-images-idx3-ubyte") as e:
        build_datasets(cfg(name="mnist", root=str(tmp_path)), seed=0)
    one_line(e)
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(bad)
    good = tmp_path / "train-images-idx3-ubyte"
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        read_idx(good)
    broken_gz = tmp_path / "x-idx1-ubyte.gz"
    broken_gz.write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(UserError, match="cannot read"):
        read_idx(broken_gz)


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed at /usr/share/datasets/fashion-mnist "
                           "(Debian package dataset-fashion-mnist)")
def test_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache: the Debian place is used
    train, val, info = build_datasets(cfg(name="fashion_mnist"), seed=0)
    assert (len(train), len(val), info.num_classes) == (60000, 10000, 10)
    assert torch.bincount(train.targets).tolist() == [6000] * 10
    assert torch.bincount(val.targets).tolist() == [1000] * 10
    assert abs(train.images.float().mean().item() / 255 - info.mean[0]) < 1e-3


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_python(tmp_path):
    batches = make_cifar10_python(tmp_path)
    train, val, info = build_datasets(cfg(name="cifar10", root=str(tmp_path)), seed=0)
    assert (len(train), len(val)) == (20, 4)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    data, labels = batches["data_batch_2"]
    # the archive's rows are 1024 red, 1024 green, 1024 blue values, row-major
    assert torch.equal(train.images[4], torch.from_numpy(data[0]).view(3, 32, 32))
    assert train.targets[4:8].tolist() == labels
    assert info.classes[0] == "airplane" and (info.num_classes, info.in_chans, info.img_size) == (10, 3, 32)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_cifar10_root_may_be_the_batches_folder(tmp_path):
    make_cifar10_python(tmp_path)
    train, _, _ = build_datasets(cfg(name="cifar10", root=str(tmp_path / "cifar-10-batches-py")), seed=0)
    assert len(train) == 20


class _Opens:
    """Unpickling this would create a file (a stand-in for any code a pickle can run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_unpickle_arrays_but_never_run_code(tmp_path, protocol):
    batches = make_cifar10_python(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    for name, (data, labels) in batches.items():  # the official archive was pickled by Python 2 (protocol 2)
        with open(d / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f, protocol=protocol)
    train, _, _ = build_datasets(cfg(name="cifar10", root=str(tmp_path)), seed=0)
    assert torch.equal(train.images[:4].reshape(4, -1), torch.from_numpy(batches["data_batch_1"][0]))
    marker = tmp_path / "ran"
    write_pickle(d / "data_batch_2", {"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 4,
                                      "x": _Opens(marker)})
    with pytest.raises(UserError, match=r"data_batch_2: refused to load (builtins|io)\.open") as e:
        build_datasets(cfg(name="cifar10", root=str(tmp_path)), seed=0)
    one_line(e)
    assert not marker.exists()


def test_cifar100_python(tmp_path):
    make_cifar100_python(tmp_path)
    train, val, info = build_datasets(cfg(name="cifar100", root=str(tmp_path)), seed=0)
    assert (len(train), len(val), info.num_classes) == (10, 5, 100)
    assert train.targets.tolist() == [(7 * j) % 100 for j in range(10)]
    assert info.classes[7] == "beetle"


def test_cifar10_jpeg_folders(tmp_path):
    root = tmp_path / "cifar10-jpeg"
    classes = DATASETS["cifar10"].classes
    for c in classes:
        for k in range(3):
            save_image(root / "train" / c / f"{k:04d}.jpg", fmt="JPEG")
        save_image(root / "test" / c / "0000.jpg", fmt="JPEG")
    train, val, info = build_datasets(cfg(name="cifar10", root=str(tmp_path)), seed=0)
    assert isinstance(train, TensorImageDataset)  # decoded into memory
    assert train.images.shape == (30, 3, 32, 32) and val.images.shape == (10, 3, 32, 32)
    assert train.targets.tolist() == [c for c in range(10) for _ in range(3)]
    assert info.classes == list(classes)
    # a random subset is taken before decoding: only those files are read
    (root / "train" / "cat" / "0001.jpg").write_bytes(b"not a jpeg")
    sub, _, _ = build_datasets(cfg(name="cifar10", root=str(tmp_path), train_subset=5,
                                   subset_mode="first"), seed=0)
    assert len(sub) == 5 and sub.targets.tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(UserError, match=r"cat/0001\.jpg") as e:
        build_datasets(cfg(name="cifar10", root=str(tmp_path), bad_images="error"), seed=0)
    one_line(e)


# --------------------------------------------------------------------------- Tiny ImageNet


def test_tiny_imagenet(tmp_path):
    wnids = make_tiny_imagenet(tmp_path)
    train, val, info = build_datasets(cfg(name="tiny_imagenet", root=str(tmp_path)), seed=0)
    order = sorted(wnids)  # labels follow the sorted wnids, as ImageFolder would
    assert info.classes == ["goldfish", "Egyptian cat", "n09999999"]
    assert (info.num_classes, info.in_chans, info.img_size) == (3, 3, 64)
    assert len(train) == 6 and torch.bincount(train.targets).tolist() == [2, 2, 2]
    assert val.targets.tolist() == [order.index(w) for w in wnids + wnids[:1]]
    x, y = val[0]  # a grey JPEG comes out with 3 channels
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == order.index(wnids[0])


def test_tiny_imagenet_bad_annotation(tmp_path):
    make_tiny_imagenet(tmp_path)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_99.JPEG\tn02124075\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match="val_99.JPEG") as e:
        build_datasets(cfg(name="tiny_imagenet", root=str(tmp_path)), seed=0)
    one_line(e)


# --------------------------------------------------------------------------- image folders


def make_two_trees(root: Path) -> None:
    for c, n in (("cat", 4), ("dog", 3), ("eel", 2)):
        for k in range(n):
            save_image(root / "train" / c / f"{k}.png", size=(40 + 8 * k, 36), fmt="PNG")
    save_image(root / "val" / "cat" / "a.jpg", size=(50, 50), fmt="JPEG")
    save_image(root / "val" / "eel" / "b.bmp", size=(30, 45), mode="L", fmt="BMP")  # PIL decodes BMP
    save_image(root / "val" / "eel" / "c.png", size=(36, 36), mode="RGBA", fmt="PNG")


def test_imagefolder_two_trees(tmp_path, caplog):
    make_two_trees(tmp_path)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "dog" / ".DS_Store").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="vitlab.data"):
        train, val, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert "skipped 1 file" in caplog.text  # notes.txt; hidden files are ignored
    assert isinstance(train, ImageFileDataset)
    assert info.classes == ["cat", "dog", "eel"] and info.num_classes == 3 and info.in_chans == 3
    assert info.img_size == 36  # the first image's shorter side
    assert train.targets.tolist() == [0] * 4 + [1] * 3 + [2] * 2
    assert val.targets.tolist() == [0, 2, 2]
    for dset in (train, val):  # every size, mode and format comes out (3, 36, 36)
        for i in range(len(dset)):
            x, _ = dset[i]
            assert x.shape == (3, 36, 36) and x.dtype == torch.float32
    xb, yb = next(iter(DataLoader(train, batch_size=4)))
    assert xb.shape == (4, 3, 36, 36) and yb.dtype == torch.int64


def test_pil_fallback_without_torchvision_decoders(tmp_path, monkeypatch):
    import vitlab.data.images as images_mod
    make_two_trees(tmp_path)
    train, _, _ = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    fast = train[0][0]
    monkeypatch.setattr(images_mod, "decode_image", None)
    monkeypatch.setattr(images_mod, "decode_jpeg", None)
    assert torch.equal(train[0][0], fast)  # PNG: lossless, the same pixels either way
    assert images_mod.read_images([str(tmp_path / "val" / "cat" / "a.jpg")])[0].shape == (3, 50, 50)


def test_imagefolder_val_class_unknown(tmp_path):
    make_two_trees(tmp_path)
    save_image(tmp_path / "val" / "fox" / "x.png", fmt="PNG")
    with pytest.raises(UserError, match="fox") as e:
        build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    one_line(e)


def test_imagefolder_one_tree_split(tmp_path):
    for c, n in (("a", 10), ("b", 20), ("c", 5)):
        for k in range(n):
            save_image(tmp_path / c / f"{k:02d}.png", size=(16, 16), fmt="PNG")

    def split(seed, fraction=0.2):
        train, val, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path), val_fraction=fraction),
                                          seed=seed)
        return train, val, info

    train, val, info = split(0)
    assert info.classes == ["a", "b", "c"] and info.img_size == 16
    assert torch.bincount(val.targets).tolist() == [2, 4, 1]  # stratified
    assert len(train) + len(val) == 35 and not set(train.paths) & set(val.paths)
    assert split(0)[1].paths == val.paths  # seeded: reproducible
    assert split(1)[1].paths != val.paths
    with pytest.raises(UserError, match="val_fraction"):
        split(0, fraction=1.0)


def test_imagefolder_corrupt_image(tmp_path):
    make_two_trees(tmp_path)
    bad = tmp_path / "train" / "dog" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    empty = tmp_path / "train" / "dog" / "8.jpg"
    empty.write_bytes(b"")
    train, _, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert [p for p, _ in info.bad_files] == [str(empty), str(bad)]  # found before training, left out
    assert str(bad) not in train.paths and len(train) == 9
    listed = ImageFileDataset([str(bad), str(empty)], [1, 1], info.classes)
    for i, path in enumerate((bad, empty)):  # read anyway: a clear error
        with pytest.raises(UserError, match=str(path)) as e:
            listed[i]
        one_line(e)


def test_imagefolder_needs_root():
    with pytest.raises(UserError, match="data.root") as e:
        build_datasets(cfg(name="imagefolder"), seed=0)
    one_line(e)


# --------------------------------------------------------------------------- subsets


def test_subsets_first_and_random(tmp_path):
    make_idx(tmp_path, n_train=40, n_test=20)
    root = str(tmp_path)
    train, val, _ = build_datasets(cfg(name="mnist", root=root, train_subset=7, val_subset=5), seed=0)
    full, _, _ = build_datasets(cfg(name="mnist", root=root), seed=0)
    assert (len(train), len(val)) == (7, 5)
    assert torch.equal(train.images, full.images[:7]) and isinstance(train, TensorImageDataset)

    def rand(seed):
        return build_datasets(cfg(name="mnist", root=root, train_subset=7, val_subset=5,
                                  subset_mode="random"), seed=seed)[0]

    a, b, c = rand(0), rand(0), rand(1)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    idx = [next(i for i in range(40) if torch.equal(full.images[i], img)) for img in a.images]
    assert idx == sorted(idx) and len(set(idx)) == 7  # dataset order, no repeats
    big, _, _ = build_datasets(cfg(name="mnist", root=root, train_subset=1000), seed=0)
    assert len(big) == 40  # more than there are: all of them
    for bad in (dict(train_subset=0), dict(subset_mode="last")):
        with pytest.raises(UserError, match="train_subset|subset_mode") as e:
            build_datasets(cfg(name="mnist", root=root, **bad), seed=0)
        one_line(e)


def test_first_subset_of_sorted_folders_warns(tmp_path, caplog):
    for c in "abc":
        for k in range(4):
            save_image(tmp_path / c / f"{k}.png", size=(8, 8), fmt="PNG")
    with caplog.at_level(logging.WARNING, logger="vitlab.data"):
        train, _, _ = build_datasets(cfg(name="imagefolder", root=str(tmp_path), val_fraction=0.25,
                                         train_subset=3), seed=0)
    assert len(train) == 3 and "subset_mode=random" in caplog.text


# --------------------------------------------------------------------------- transforms


def test_train_transforms_all_options(tmp_path):
    make_cifar10_python(tmp_path)
    c = cfg(name="cifar10", root=str(tmp_path), img_size=48, crop_padding=4, hflip=True,
            auto_augment="cifar10", rand_augment=2, rand_augment_magnitude=9, random_erasing=0.5)
    train, val, info = build_datasets(c, seed=0)
    kinds = [type(t).__name__ for t in train.transform.transforms]
    assert kinds == ["Resize", "RandomCrop", "RandomHorizontalFlip", "AutoAugment", "RandAugment",
                     "ToDtype", "Normalize", "RandomErasing"]
    assert [type(t).__name__ for t in val.transform.transforms] == ["Resize", "ToDtype", "Normalize"]
    assert info.img_size == 32  # native; data.img_size resizes
    torch.manual_seed(0)
    for i in range(len(train)):
        x, _ = train[i]
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert val[0][0].shape == (3, 48, 48)
    for policy in ("imagenet", "svhn"):
        t, _, _ = build_datasets(cfg(name="cifar10", root=str(tmp_path), auto_augment=policy), seed=0)
        assert t[0][0].shape == (3, 32, 32)


def test_plain_transforms_on_grey(tmp_path):
    make_idx(tmp_path)
    train, _, info = build_datasets(cfg(name="fashion_mnist", root=str(tmp_path), crop_padding=2, hflip=True,
                                        auto_augment="imagenet", rand_augment=1), seed=0)
    assert [type(t).__name__ for t in train.transform.transforms][:2] == ["RandomCrop", "RandomHorizontalFlip"]
    x, _ = train[0]
    assert x.shape == (1, 28, 28)
    plain, _, _ = build_datasets(cfg(name="fashion_mnist", root=str(tmp_path)), seed=0)
    assert [type(t).__name__ for t in plain.transform.transforms] == ["ToDtype", "Normalize"]
    xs = torch.stack([plain[i][0] for i in range(len(plain))])
    raw = plain.images.float() / 255
    assert torch.allclose(xs * info.std[0] + info.mean[0], raw, atol=1e-6)


@pytest.mark.parametrize("key,value,match", [
    ("auto_augment", "autumn", "cifar10, imagenet, svhn"),
    ("name", "cifar11", "valid: cifar10, cifar100"),
    ("rand_augment_magnitude", 40, "rand_augment_magnitude"),
    ("random_erasing", 1.5, "random_erasing"),
    ("crop_padding", -1, "crop_padding"),
    ("mixup", -0.1, "mixup"),
])
def test_bad_option_values(key, value, match):
    for check in (check_options, lambda c: build_datasets(c, seed=0)):  # when the config is read, and again
        with pytest.raises(UserError, match=match) as e:
            check(cfg(**{key: value}))
        assert key in one_line(e)


def test_eval_transform_for_predict():
    grey = DatasetInfo("fashion_mnist", 10, 1, 28, (0.5,), (0.25,), [str(i) for i in range(10)])
    rgb = DatasetInfo("cifar10", 10, 3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), list("abcdefghij"))
    photo = Image.new("RGB", (120, 80), (200, 100, 50))
    x = build_eval_transform(grey, None)(photo)  # colour -> grey, any size -> native
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    luma = (200 * 299 + 100 * 587 + 50 * 114) / 1000 / 255  # PIL's "L" conversion
    assert torch.allclose(x, torch.full_like(x, (luma - 0.5) / 0.25), atol=0.02)
    x = build_eval_transform(rgb, 64)(Image.new("L", (10, 10), 128))  # grey -> RGB, upscale
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-5)
    x = build_eval_transform(rgb, None)(Image.new("RGBA", (32, 40)))
    assert x.shape == (3, 32, 32)
    x = build_eval_transform(rgb, None)(torch.zeros(1, 32, 32, dtype=torch.uint8))  # tensors too
    assert x.shape == (3, 32, 32)


def test_describe_transforms():
    line = describe_transforms(cfg(img_size=64, crop_padding=4, hflip=True, auto_augment="cifar10",
                                   rand_augment=2, random_erasing=0.25, mixup=0.8, cutmix=1.0))
    assert "\n" not in line
    for part in ("resize 64", "pad 4", "hflip", "autoaugment cifar10", "randaugment 2", "erasing",
                 "mixup 0.8", "cutmix 1"):
        assert part in line
    assert describe_transforms(cfg()) == "train: normalise | eval: normalise"


# --------------------------------------------------------------------------- Mixup / CutMix


@pytest.mark.parametrize("mixup,cutmix,kind", [(0.8, 0.0, "MixUp"), (0.0, 1.0, "CutMix"),
                                               (0.8, 1.0, "RandomChoice")])
def test_batch_mixer(mixup, cutmix, kind):
    mix = batch_mixer(cfg(mixup=mixup, cutmix=cutmix), num_classes=10)
    assert type(mix.transform).__name__ == kind
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    xm, ym = mix(x, y)
    assert xm.shape == x.shape and type(xm) is torch.Tensor
    assert ym.shape == (8, 10) and ym.dtype == torch.float32
    assert torch.allclose(ym.sum(1), torch.ones(8))


def test_batch_mixer_off():
    assert batch_mixer(cfg(), num_classes=10) is None


# --------------------------------------------------------------------------- missing data, wrong root


def test_missing_dataset_default_places(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(UserError) as e:
        build_datasets(cfg(name="mnist"), seed=0)
    msg = one_line(e)
    assert str(tmp_path / "cache" / "vitlab" / "data" / "mnist") in msg
    assert "--set data.download=true" in msg and "train-images-idx3-ubyte" in msg


def test_wrong_root(tmp_path):
    with pytest.raises(UserError) as e:
        build_datasets(cfg(name="cifar10", root=str(tmp_path / "nowhere")), seed=0)
    msg = one_line(e)
    assert "does not exist" in msg and "nowhere" in msg and "--set data.download=true" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as e:
        build_datasets(cfg(name="cifar100", root=str(tmp_path / "empty")), seed=0)
    msg = one_line(e)
    assert "no cifar100 files" in msg and "cifar-100-python" in msg and "data.download=true" in msg


def test_default_cache_place_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    make_idx(tmp_path / "vitlab" / "data" / "fashion_mnist", n_train=10, n_test=10)
    train, _, _ = build_datasets(cfg(name="fashion_mnist"), seed=0)
    assert len(train) == 10  # the cache comes before the system place


# --------------------------------------------------------------------------- downloads (up to the network)


def test_download_idx_files(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def fake_download_url(url, root, filename=None, md5=None):
        calls.append((url, Path(root), filename, md5))
        if len(calls) == 4:  # "the network" delivers the files
            make_idx(Path(root), n_train=10, n_test=10)

    monkeypatch.setattr(catalog_mod, "download_url", fake_download_url)
    train, val, _ = build_datasets(cfg(name="mnist", download=True), seed=0)
    assert (len(train), len(val)) == (10, 10)
    target = tmp_path / "vitlab" / "data" / "mnist"
    assert [c[0] for c in calls] == [u for u, _ in DATASETS["mnist"].downloads]
    assert calls[0] == ("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", target,
                        "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873")
    calls.clear()
    build_datasets(cfg(name="mnist", download=True), seed=0)
    assert calls == []  # there already: no download


@pytest.mark.parametrize("name,url", [
    ("cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ("cifar100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    ("tiny_imagenet", "http://cs231n.stanford.edu/tiny-imagenet-200.zip"),
])
def test_download_archives(tmp_path, monkeypatch, name, url):
    calls = []

    make = {"cifar10": make_cifar10_python, "cifar100": make_cifar100_python,
            "tiny_imagenet": make_tiny_imagenet}[name]

    def fake_extract(url, download_root, filename=None, md5=None, remove_finished=False):
        calls.append((url, Path(download_root), md5))
        make(Path(download_root))

    monkeypatch.setattr(catalog_mod, "download_and_extract_archive", fake_extract)
    root = tmp_path / "data"
    train, val, info = build_datasets(cfg(name=name, root=str(root), download=True), seed=0)
    assert calls == [(url, root, DATASETS[name].downloads[0][1])]
    # what was "downloaded" is what is read, and all of it
    made = make(tmp_path / "made")
    if name == "cifar10":
        train_files, test_files = [f"data_batch_{k}" for k in range(1, 6)], ["test_batch"]
    elif name == "cifar100":
        train_files, test_files = ["train"], ["test"]
    if name == "tiny_imagenet":
        order = sorted(made)  # labels follow the sorted wnids
        folder = root / "tiny-imagenet-200"
        assert [Path(p).relative_to(folder).as_posix() for p in train.paths] == [
            f"train/{w}/images/{w}_{k}.JPEG" for w in order for k in range(2)]
        assert train.targets.tolist() == [0, 0, 1, 1, 2, 2]
        assert [Path(p).relative_to(folder).as_posix() for p in val.paths] == [f"val/images/val_{k}.JPEG"
                                                                                for k in range(4)]
        assert val.targets.tolist() == [order.index(w) for w in made + made[:1]]
        assert info.classes == ["goldfish", "Egyptian cat", "n09999999"] and info.val_split == "val"
    else:
        for ds, files in ((train, train_files), (val, test_files)):
            data = np.concatenate([made[f][0] for f in files])
            assert torch.equal(ds.images, torch.from_numpy(data).view(-1, 3, 32, 32))
            assert ds.targets.tolist() == [y for f in files for y in made[f][1]]
        assert info.classes == list(DATASETS[name].classes) and info.val_split == "test"


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(catalog_mod, "download_and_extract_archive", offline)
    root = tmp_path / "new"
    with pytest.raises(UserError) as e:
        build_datasets(cfg(name="cifar10", root=str(root), download=True), seed=0)
    msg = one_line(e)
    assert "cifar-10-python.tar.gz failed" in msg and str(root) in msg
    assert not root.exists()  # the folder it made is gone again


def test_imagefolder_cannot_download(tmp_path):
    with pytest.raises(UserError, match="does not exist") as e:
        build_datasets(cfg(name="imagefolder", root=str(tmp_path / "x"), download=True), seed=0)
    assert "download" not in one_line(e)


# --------------------------------------------------------------------------- load_image


def test_load_image(tmp_path):
    save_image(tmp_path / "ok.png", size=(20, 10), fmt="PNG")
    img = load_image(tmp_path / "ok.png")
    assert isinstance(img, Image.Image) and img.size == (20, 10)
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    good = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    for name, match in (("missing.png", "not found"), ("text.jpg", "not an image"),
                        ("empty.png", "empty"), ("cut.png", "cut.png"), ("", "folder")):
        with pytest.raises(UserError, match=match) as e:
            load_image(tmp_path / name)
        one_line(e)
