"""vitlab.data on people's own files: classes from file names, unreadable
images found before training (and remembered), images of every mode, and a
validation set held out of the training set."""

from __future__ import annotations

import io
import json
import logging
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import vitlab.data.checks as checks_mod
from data_helpers import cfg, make_cifar10_python, make_idx, make_tiny_imagenet, one_line, save_image, write_idx
from tiny import fails, write_config
from vitlab import cli
from vitlab.data import (DATASETS, build_datasets, check_options, class_from_filename, find_bad_images,
                         read_image)
from vitlab.data.checks import check_cache_path
from vitlab.errors import UserError

# torchvision 0.29 deprecates its image decoders (vitlab falls back to PIL when they go)
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

CLASSES = ["cat", "sports_car", "кошка", "猫"]  # an underscore, Cyrillic and CJK


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(size=(40, 30), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def good_images(seed: int = 0) -> dict[str, bytes]:
    """One file of each mode (and several sizes) that must load: name suffix -> bytes."""
    rgb = noise((40, 30), seed)
    wide16 = Image.fromarray(np.random.default_rng(seed).integers(0, 65536, (30, 44)).astype(np.uint16))
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    return {
        "rgb.jpg": encode(rgb, "JPEG"),
        "grey.png": encode(noise((33, 47), seed).convert("L"), "PNG"),
        "rgba.png": encode(noise((64, 64), seed).convert("RGBA"), "PNG"),
        "cmyk.jpg": encode(noise((50, 36), seed).convert("CMYK"), "JPEG"),
        "palette.png": encode(rgb.convert("P"), "PNG"),
        "palette_alpha.png": encode(palette, "PNG", transparency=0),
        "sixteen.png": encode(wide16, "PNG"),  # I;16
        "grey_alpha.png": encode(noise((28, 28), seed).convert("LA"), "PNG"),
        "bilevel.bmp": encode(noise((31, 29), seed).convert("1"), "BMP"),
        "cmyk.tif": encode(noise((29, 40), seed).convert("CMYK"), "TIFF"),
        "colour.webp": encode(noise((26, 30), seed), "WEBP"),
    }


def bad_images(seed: int = 0) -> dict[str, tuple[bytes, str]]:
    """Files with an image extension that cannot be used: name suffix -> (bytes, a word of the reason)."""
    jpeg = encode(noise((64, 64), seed), "JPEG", quality=95)
    png = encode(noise((64, 64), seed), "PNG")
    return {
        "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "cut.png": (png[: len(png) // 2], "truncated"),
        "empty.jpg": (b"", "empty"),
        "text.png": (b"<html>not found</html>", "not an image"),
        "random.jpeg": (np.random.default_rng(seed).bytes(500), "not an image"),
        "header_only.jpg": (jpeg[:200], ""),
    }


def make_messy(root: Path, classes=("cat", "кошка", "猫")) -> tuple[set[str], set[str]]:
    """root/train/<class>/ and root/val/<class>/ with good images of every mode and size, bad files
    under image extensions and a text file; returns (good paths, bad paths)."""
    good, bad = set(), set()
    for k, c in enumerate(classes):
        for split, n_good in (("train", None), ("val", 3)):
            d = root / split / c
            d.mkdir(parents=True)
            for i, (name, raw) in enumerate(list(good_images(seed=k).items())[:n_good]):
                (d / f"{i:02d}_{name}").write_bytes(raw)
                good.add(str(d / f"{i:02d}_{name}"))
            (d / "notes.txt").write_text("not an image, no image extension: skipped at listing")
        for j, (name, (raw, _)) in enumerate(bad_images(seed=k).items()):
            d = root / ("val" if (j + k) % 3 == 0 else "train") / c  # every kind in train and in val
            (d / f"bad_{name}").write_bytes(raw)
            bad.add(str(d / f"bad_{name}"))
    return good, bad


# --------------------------------------------------------------------------- labels from file names


def make_flat(root: Path, names: dict[str, list[str]]) -> None:
    """root/<split>/<name>.png for each split and file stem."""
    for split, stems in names.items():
        for k, stem in enumerate(stems):
            save_image(root / split / f"{stem}.png", size=(20 + k, 24), fmt="PNG")


def test_class_from_filename():
    assert class_from_filename("x/sports_car_12.jpg") == "sports_car"
    assert class_from_filename("cat_0001.png") == "cat"
    assert class_from_filename("кошка_7.JPEG") == "кошка"
    assert class_from_filename("cat.png") is None and class_from_filename("_1.png") is None
    decomposed = unicodedata.normalize("NFD", "café_1.png")
    assert class_from_filename(decomposed) == unicodedata.normalize("NFC", "café")


def test_labels_from_filename_flat_train_and_test(tmp_path):
    make_flat(tmp_path, {"train": ["cat_0001", "cat_0002", "sports_car_12", "sports_car_13", "кошка_1", "猫_1",
                                   "猫_2"],
                         "test": ["猫_3", "cat_0003", "sports_car_14"]})
    train, val, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path), labels="from_filename"), seed=0)
    assert info.classes == sorted(CLASSES) == ["cat", "sports_car", "кошка", "猫"]
    assert info.num_classes == 4 and info.val_split == "test"
    names = [Path(p).name for p in train.paths]
    assert [info.classes[t] for t in train.targets.tolist()] == [n.rpartition("_")[0] for n in names]
    assert sorted(val.targets.tolist()) == [0, 1, 3]
    assert {Path(p).name: info.classes[t] for p, t in zip(val.paths, val.targets.tolist())} == {
        "猫_3.png": "猫", "cat_0003.png": "cat", "sports_car_14.png": "sports_car"}
    for ds in (train, val):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 20, 20) and 0 <= y < 4


def test_labels_from_filename_one_folder(tmp_path):
    make_flat(tmp_path, {".": [f"{c}_{k}" for c in CLASSES for k in range(5)]})
    train, val, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path), labels="from_filename",
                                          val_fraction=0.2), seed=0)
    assert info.classes == sorted(CLASSES) and info.val_split == "holdout"
    assert torch.bincount(val.targets).tolist() == [1, 1, 1, 1] and len(train) == 16


def test_labels_from_filename_unknown_class_in_val(tmp_path):
    make_flat(tmp_path, {"train": ["cat_1", "dog_1"], "val": ["cat_2", "fox_1"]})
    with pytest.raises(UserError) as e:
        build_datasets(cfg(name="imagefolder", root=str(tmp_path), labels="from_filename"), seed=0)
    msg = one_line(e)
    assert str(tmp_path / "val" / "fox_1.png") in msg and "'fox'" in msg


def test_labels_from_filename_needs_a_class_in_each_name(tmp_path):
    make_flat(tmp_path, {"train": ["cat_1", "README"], "test": ["cat_2"]})
    with pytest.raises(UserError) as e:
        build_datasets(cfg(name="imagefolder", root=str(tmp_path), labels="from_filename"), seed=0)
    assert str(tmp_path / "train" / "README.png") in one_line(e)


def test_labels_folders_is_the_default(tmp_path):
    make_flat(tmp_path, {"train/a": ["x_1", "x_2"], "val/a": ["y_1"]})
    _, _, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert info.classes == ["a"] and info.val_split == "val"


@pytest.mark.parametrize("options,match", [
    (dict(labels="filename"), "unknown data.labels 'filename'; valid: folders, from_filename"),
    (dict(name="mnist", labels="from_filename"), "data.labels=from_filename applies to data.name=imagefolder"),
    (dict(bad_images="ignore"), "unknown data.bad_images 'ignore'; valid: skip, error"),
    (dict(holdout=-0.1), "data.holdout must lie between 0 and 1"),
    (dict(holdout=1.0), "data.holdout must lie between 0 and 1"),
    (dict(holdout=1.5), "data.holdout must lie between 0 and 1"),
    (dict(holdout=float("nan")), "data.holdout must lie between 0 and 1"),
])
def test_bad_option_values(tmp_path, options, match):
    make_flat(tmp_path, {"train/a": ["x_1", "x_2"]})
    for check in (check_options, lambda c: build_datasets(c, seed=0)):  # when the config is read, and again
        with pytest.raises(UserError, match=match) as e:
            check(cfg(**{"name": "imagefolder", "root": str(tmp_path), **options}))
        one_line(e)


# --------------------------------------------------------------------------- images of every mode


def expected_pixels(raw: bytes, channels: int) -> torch.Tensor:
    """What ``read_image`` must give for the file ``raw``, by PIL alone: the first frame; 16-bit grey
    scaled by 1/257; a palette with transparency through RGBA; alpha dropped (not blended); then RGB, or
    (``channels`` 1) grey, which a JPEG decodes to directly (its luma, as libjpeg gives it)."""
    img = Image.open(io.BytesIO(raw))
    img.seek(0)
    if img.mode == "I;16":
        img = Image.fromarray(np.round(np.asarray(img, dtype=np.float64) / 257).astype(np.uint8), "L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.format == "JPEG" and channels == 1:
        img.draft("L", img.size)
    arr = torch.from_numpy(np.array(img.convert("RGB" if channels == 3 else "L")))
    return arr.permute(2, 0, 1) if channels == 3 else arr[None]


@pytest.mark.parametrize("channels", [3, 1])
def test_every_mode_and_size_loads(tmp_path, channels):
    animated = encode(noise((30, 30)).convert("P"), "GIF", save_all=True,
                      append_images=[noise((30, 30), 1).convert("P")])  # read_image takes the first frame
    for name, raw in [*good_images().items(), ("anim.gif", animated)]:
        (tmp_path / name).write_bytes(raw)
        x = read_image(tmp_path / name, channels)
        width, height = Image.open(io.BytesIO(raw)).size
        assert x.dtype == torch.uint8 and x.shape == (channels, height, width), name
        diff = (x.int() - expected_pixels(raw, channels).int()).abs()
        # colour to grey: libpng's luma may round one level away from PIL's; everything else exact
        assert diff.max() <= (1 if channels == 1 and Image.open(io.BytesIO(raw)).mode in ("RGBA", "P") else 0), \
            (name, int(diff.max()))
    # the originals themselves, where the format keeps them: RGB under the alpha, grey, 16 bits, two levels
    rgba = np.asarray(noise((64, 64)))
    assert torch.equal(read_image(tmp_path / "rgba.png", 3), torch.from_numpy(rgba.copy()).permute(2, 0, 1))
    grey = np.asarray(noise((33, 47)).convert("L"))
    assert torch.equal(read_image(tmp_path / "grey.png", channels)[-1], torch.from_numpy(grey.copy()))
    wide16 = np.random.default_rng(0).integers(0, 65536, (30, 44))
    assert torch.equal(read_image(tmp_path / "sixteen.png", channels)[0],
                       torch.from_numpy(np.round(wide16 / 257).astype(np.uint8)))
    assert set(read_image(tmp_path / "bilevel.bmp", channels).unique().tolist()) == {0, 255}


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 8-bit 0, 1, 128, 255
    Image.fromarray(values).save(tmp_path / "a.png")
    Image.fromarray(values).save(tmp_path / "a.tif")  # PIL decodes this one
    for name in ("a.png", "a.tif"):
        assert read_image(tmp_path / name, 1).flatten().tolist() == [0, 1, 128, 255], name


# --------------------------------------------------------------------------- unreadable images


def test_bad_images_are_left_out_and_listed(tmp_path, caplog):
    good, bad = make_messy(tmp_path)
    with caplog.at_level(logging.WARNING, logger="vitlab.data"):
        train, val, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert set(train.paths) | set(val.paths) == good
    assert {p for p, _ in info.bad_files} == bad
    assert [p for p, _ in info.bad_files] == sorted(p for p in bad if "/train/" in p) + \
        sorted(p for p in bad if "/val/" in p)  # training files first, each in listing order
    reasons = dict(info.bad_files)
    for p, r in reasons.items():
        assert r and "\n" not in r
        word = bad_images()[Path(p).name.split("_", 1)[1]][1]
        assert word in r, (p, r)
    assert info.classes == ["cat", "кошка", "猫"] and info.val_split == "val"
    warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1 and f"left out {len(bad)} of {len(good) + len(bad)} image files" in \
        warnings[0].getMessage()
    # every item loads: what a run's epoch does
    for ds in (train, val):
        for x, y in DataLoader(ds, batch_size=5):
            assert x.shape[1:] == (3, info.img_size, info.img_size) and x.dtype == torch.float32
            assert torch.isfinite(x).all() and ((0 <= y) & (y < 3)).all()


def test_bad_images_error(tmp_path):
    _, bad = make_messy(tmp_path)
    with pytest.raises(UserError) as e:
        build_datasets(cfg(name="imagefolder", root=str(tmp_path), bad_images="error"), seed=0)
    msg = one_line(e)
    first = sorted(p for p in bad if "/train/" in p)[0]
    assert f"{len(bad)} of " in msg and first in msg and "data.bad_images=skip" in msg


def test_a_bad_first_image_does_not_decide_the_size(tmp_path):
    for k in range(5):
        save_image(tmp_path / "a" / f"{k}.png", size=(30, 26), fmt="PNG")
    (tmp_path / "a" / "0.png").write_bytes(b"")  # the first file of the listing
    train, val, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path), val_fraction=0.4), seed=0)
    assert info.img_size == 26 and len(train) + len(val) == 4 and len(info.bad_files) == 1


def test_bad_images_in_other_datasets(tmp_path):
    root = tmp_path / "cifar10-jpeg"
    for c in DATASETS["cifar10"].classes:
        for k in range(2):
            save_image(root / "train" / c / f"{k}.jpg", fmt="JPEG")
        save_image(root / "test" / c / "0.jpg", fmt="JPEG")
    (root / "train" / "dog" / "1.jpg").write_bytes(b"")
    train, val, info = build_datasets(cfg(name="cifar10", root=str(tmp_path)), seed=0)
    assert train.images.shape == (19, 3, 32, 32) and len(val) == 10  # decoded into memory without it
    assert [p for p, _ in info.bad_files] == [str(root / "train" / "dog" / "1.jpg")]

    make_tiny_imagenet(tmp_path / "t")
    cut = next((tmp_path / "t").rglob("val_1.JPEG"))
    cut.write_bytes(cut.read_bytes()[:300])
    _, val, info = build_datasets(cfg(name="tiny_imagenet", root=str(tmp_path / "t")), seed=0)
    assert len(val) == 3 and [p for p, _ in info.bad_files] == [str(cut)]
    assert all(val[i][0].shape == (3, 64, 64) for i in range(len(val)))


class Counting:
    """check_image, counting the files it looks at."""

    def __init__(self, monkeypatch):
        self.seen: list[str] = []
        self.real = checks_mod.check_image
        monkeypatch.setattr(checks_mod, "check_image", self)

    def __call__(self, path, channels=3):
        self.seen.append(str(path))
        return self.real(path, channels)


def test_checks_are_remembered(tmp_path, cache, monkeypatch):
    good, bad = make_messy(tmp_path)
    count = Counting(monkeypatch)
    _, _, first = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert sorted(count.seen) == sorted(good | bad)
    stored = check_cache_path(tmp_path)
    assert stored.is_file() and stored.is_relative_to(cache / "vitlab" / "image-checks")
    assert len(json.loads(stored.read_text())["files"]) == len(good | bad)

    count.seen.clear()
    _, _, again = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert count.seen == [] and again.bad_files == first.bad_files  # nothing decoded the second time

    # a file changed since: checked again, and only it
    changed = sorted(p for p in good if "/train/" in p)[0]
    raw = Path(changed).read_bytes()
    Path(changed).write_bytes(raw[:40])
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fixed = sorted(bad)[0]
    Path(fixed).write_bytes(good_images()["rgb.jpg"])
    count.seen.clear()
    train, val, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert sorted(count.seen) == sorted([changed, fixed])
    assert changed in dict(info.bad_files) and fixed not in dict(info.bad_files)
    assert fixed in train.paths + val.paths


def test_unwritable_cache_costs_only_time(tmp_path, cache, monkeypatch):
    make_messy(tmp_path)
    (cache / "vitlab").mkdir(parents=True)
    (cache / "vitlab" / "image-checks").write_text("a file where the folder should be")
    _, _, info = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert info.bad_files
    (cache / "vitlab" / "image-checks").unlink()
    check_cache_path(tmp_path).parent.mkdir(parents=True)
    check_cache_path(tmp_path).write_text("{not json")
    _, _, again = build_datasets(cfg(name="imagefolder", root=str(tmp_path)), seed=0)
    assert again.bad_files == info.bad_files


def test_many_files_are_checked_in_worker_processes(tmp_path, monkeypatch):
    good, bad = make_messy(tmp_path)
    paths = sorted(good | bad)
    serial = find_bad_images(paths, use_cache=False)
    monkeypatch.setattr(checks_mod, "_PARALLEL_FROM", 1)
    monkeypatch.setattr(checks_mod, "_CHUNK", 7)
    monkeypatch.setattr(checks_mod, "_workers", lambda: 2)
    assert find_bad_images(paths, use_cache=False) == serial
    assert {p for p, _ in serial} == bad


# --------------------------------------------------------------------------- holdout


def image_keys(ds) -> list[bytes]:
    return [img.numpy().tobytes() for img in ds.images]


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_holdout_is_stratified_disjoint_and_seeded(tmp_path, fraction):
    make_idx(tmp_path, n_train=0, n_test=12)
    counts = [2, 3, 5, 8, 13, 21, 1, 4, 9, 30]  # class 6 has one image: it stays in training
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), counts)
    rng.shuffle(labels)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (len(labels), 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    full, test, _ = build_datasets(cfg(name="mnist", root=str(tmp_path)), seed=0)

    def split(seed):
        return build_datasets(cfg(name="mnist", root=str(tmp_path), holdout=fraction), seed=seed)

    train, val, info = split(0)
    assert info.val_split == "holdout"
    everything = image_keys(full)
    t_keys, v_keys = image_keys(train), image_keys(val)
    assert not set(t_keys) & set(v_keys)  # disjoint
    assert sorted(t_keys + v_keys) == sorted(everything)  # all from the training split, none lost
    assert not set(v_keys) & set(image_keys(test))  # the test split is not used
    per_class = torch.bincount(val.targets, minlength=10).tolist()
    for c, n in enumerate(counts):
        assert abs(per_class[c] - fraction * n) <= 1, (c, n, per_class[c])
        assert per_class[c] >= (1 if n >= 2 else 0) and per_class[c] < max(n, 1)
    again, other = split(0), split(1)
    assert image_keys(again[1]) == v_keys and torch.equal(again[0].targets, train.targets)
    assert image_keys(other[1]) != v_keys


def test_holdout_comes_before_subsets(tmp_path):
    make_idx(tmp_path, n_train=100, n_test=20)
    full, _, _ = build_datasets(cfg(name="mnist", root=str(tmp_path)), seed=0)
    _, held, _ = build_datasets(cfg(name="mnist", root=str(tmp_path), holdout=0.3), seed=0)
    train, val, _ = build_datasets(cfg(name="mnist", root=str(tmp_path), holdout=0.3, train_subset=20,
                                       val_subset=10), seed=0)
    assert (len(held), len(train), len(val)) == (30, 20, 10)
    assert image_keys(val) == image_keys(held)[:10]  # the first 10 of the holdout
    assert not set(image_keys(train)) & set(image_keys(held))


def test_holdout_of_every_dataset(tmp_path):
    make_cifar10_python(tmp_path / "c", per_batch=10)
    make_tiny_imagenet(tmp_path / "t")
    make_flat(tmp_path / "f", {"train/a": ["1", "2", "3", "4"], "train/b": ["1", "2"], "val/a": ["5"]})
    jpeg = tmp_path / "j" / "cifar10-jpeg"
    for c in DATASETS["cifar10"].classes:
        for k in range(4):
            save_image(jpeg / "train" / c / f"{k}.jpg", fmt="JPEG")
        save_image(jpeg / "test" / c / "0.jpg", fmt="JPEG")
    # (name, folder, images of the training split, held out: one per class here)
    for name, root, n_train, n_val in (("cifar10", "c", 50, 10), ("tiny_imagenet", "t", 6, 3),
                                       ("imagefolder", "f", 6, 2), ("cifar10", "j", 40, 10)):
        c = cfg(name=name, root=str(tmp_path / root), holdout=0.25)
        train, val, info = build_datasets(c, seed=0)
        assert info.val_split == "holdout", name
        assert len(train) + len(val) == n_train and len(val) == n_val, (name, len(train), len(val))
        assert torch.unique(val.targets).numel() == info.num_classes


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("layout", ["folders", "from_filename"])
def test_train_on_a_messy_folder(tmp_path, capsys, layout):
    """vitlab train on a folder with unreadable files, every image mode and non-ASCII classes: exit 0."""
    root = tmp_path / "imgs"
    data = {"name": "imagefolder", "root": str(root), "img_size": 28}
    if layout == "folders":
        make_messy(root)
    else:  # flat train/ and test/ folders, validation held out of train
        for split, n in (("train", 4), ("test", 1)):
            for c in CLASSES:
                for i, (name, raw) in enumerate(list(good_images(seed=len(c)).items())[:n]):
                    (root / split).mkdir(parents=True, exist_ok=True)
                    (root / split / f"{c}_{i}{Path(name).suffix}").write_bytes(raw)
            for j, (name, (raw, _)) in enumerate(bad_images().items()):
                (root / split / f"cat_bad{j}{Path(name).suffix}").write_bytes(raw)
        data.update(labels="from_filename", holdout=0.25)
    config = write_config(tmp_path / "c.yaml", data, epochs=1, threads=1, batch_size=4, loggers=[])
    assert cli.main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "metrics.csv").is_file()


def test_a_folder_of_one_class_is_refused_in_one_line(tmp_path, capsys):
    for k in range(4):
        save_image(tmp_path / "photos" / "cat" / f"cat_{k:04d}.png", size=(16, 16), fmt="PNG")
    data = {"name": "imagefolder", "root": str(tmp_path / "photos"), "img_size": 16, "val_fraction": 0.25}
    cfg = write_config(tmp_path / "c.yaml", data, model={"name": "vit_ti16", "img_size": 16, "patch_size": 8,
                                                         "depth": 1})
    err = fails(capsys, "train", cfg, "--out", tmp_path / "run")
    assert "1 class (cat)" in err and "a classifier needs two or more" in err
    assert not (tmp_path / "run").exists()
