"""vitlab predict: folders of images in batches, a CSV, an exported ONNX model
(`--onnx`), and unreadable files: every readable file is predicted, each
unreadable one is one line on stderr, and the exit code is 2."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import fails
from vitlab import cli, create_model
from vitlab.export import export
from vitlab.run import checkpoint

CLASSES = ["a", "b", "c", "d", "e", "f", "g"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread (conftest restores the count)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A grey 28 px ViT with every tensor jittered (its head is not zero)."""
    model = create_model("vit", img_size=28, patch_size=7, in_chans=1, num_classes=7, embed_dim=32, depth=2,
                         num_heads=2, mlp_dim=48)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(torch.randn(t.shape, generator=g) * 0.2)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    checkpoint.save({"model": model.state_dict(), "model_name": "vit", "model_args": model.model_args,
                     "config": {"data": {"name": "fashion_mnist", "img_size": None}},
                     "dataset": {"name": "fashion_mnist", "num_classes": 7, "in_chans": 1, "img_size": 28,
                                 "mean": [0.286], "std": [0.353], "classes": CLASSES}}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of 7 images (grey and RGB, 28 px and larger, one in a subfolder), sorted names."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        shape = (28, 28) if i % 2 else (40, 36, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "sub" / "7.png")
    (root / "notes.txt").write_text("not an image")  # skipped: not an image extension
    return root


def listed(root) -> list[str]:
    return [str(root / f"{i}.png") for i in range(6)] + [str(root / "sub" / "7.png")]


def run_json(capsys, *argv) -> list[dict]:
    assert cli.main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_folder_in_batches_gives_what_single_images_give(ckpt, images, capsys):
    whole = run_json(capsys, "predict", ckpt, images, "--batch-size", "3", "--top-k", "3")
    assert [r["image"] for r in whole] == listed(images)
    for r in whole:
        one = run_json(capsys, "predict", ckpt, r["image"], "--batch-size", "1", "--top-k", "3")[0]
        assert [t["index"] for t in one["top"]] == [t["index"] for t in r["top"]]
        assert [t["prob"] for t in one["top"]] == pytest.approx([t["prob"] for t in r["top"]], abs=1e-6)


def test_unreadable_files_are_reported_and_the_others_predicted(ckpt, images, tmp_path, capsys):
    bad, empty, missing = tmp_path / "bad.png", tmp_path / "empty.jpg", tmp_path / "none.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    empty.write_bytes(b"")
    good = listed(images)[:3]
    code = cli.main(["predict", str(ckpt), good[0], str(bad), good[1], str(empty), str(missing), good[2],
                     "--batch-size", "2"])
    assert code == 2
    out, err = capsys.readouterr()
    assert [line.split(": ")[0] for line in out.splitlines()] == good
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("vitlab: error: ") for line in lines)
    assert f"cannot read image {bad}" in lines[0] and f"cannot read image {empty}: the file is empty" in lines[1]
    assert lines[2] == f"vitlab: error: image not found: {missing}"
    assert "Traceback" not in err


def test_only_unreadable_files_is_one_line_each_and_nothing_else(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert f"cannot read image {bad}" in fails(capsys, "predict", ckpt, bad)
    (tmp_path / "empty").mkdir()
    assert fails(capsys, "predict", ckpt, tmp_path / "empty") == \
        f"vitlab: error: no image files in the folder {tmp_path / 'empty'}"


def test_csv(ckpt, images, tmp_path, capsys):
    path = tmp_path / "pred.csv"
    assert cli.main(["predict", str(ckpt), str(images), "--csv", str(path), "--top-k", "2"]) == 0
    assert capsys.readouterr().out == f"7 images: predictions in {path}\n"
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["image", "top1_class", "top1_index", "top1_prob", "top2_class", "top2_index",
                             "top2_prob"]
    want = run_json(capsys, "predict", ckpt, images, "--top-k", "2")
    assert [r["image"] for r in rows] == [w["image"] for w in want]
    for r, w in zip(rows, want):
        assert r["top1_class"] == w["top"][0]["class"] and int(r["top2_index"]) == w["top"][1]["index"]
        assert float(r["top1_prob"]) == pytest.approx(w["top"][0]["prob"], abs=1e-6)
    err = fails(capsys, "predict", ckpt, images, "--csv", tmp_path / "nowhere" / "p.csv")
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in err


def test_onnx_gives_the_checkpoints_predictions(ckpt, images, tmp_path, capsys):
    pytest.importorskip("onnx", reason="--to onnx needs onnx (pip install 'vitlab[export]')")
    pytest.importorskip("onnxscript", reason="--to onnx needs onnxscript (pip install 'vitlab[export]')")
    pytest.importorskip("onnxruntime", reason="vitlab predict --onnx needs onnxruntime")
    export(ckpt, "onnx", tmp_path / "x")
    onnx_file = tmp_path / "x" / "model.onnx"
    mine = run_json(capsys, "predict", ckpt, images, "--top-k", "7")
    theirs = run_json(capsys, "predict", "--onnx", onnx_file, images, "--top-k", "7", "--batch-size", "4")
    assert [r["image"] for r in theirs] == [r["image"] for r in mine]
    for a, b in zip(mine, theirs):
        assert [t["class"] for t in a["top"]][:1] == [t["class"] for t in b["top"]][:1]
        pa = {t["class"]: t["prob"] for t in a["top"]}
        assert max(abs(pa[t["class"]] - t["prob"]) for t in b["top"]) < 1e-4
    one = run_json(capsys, "predict", "--onnx", onnx_file, listed(images)[1])  # a single image
    assert one[0]["image"] == listed(images)[1]


def test_onnx_without_its_metadata_reads_preprocess_json(ckpt, images, tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="--to onnx needs onnx")
    pytest.importorskip("onnxscript", reason="--to onnx needs onnxscript")
    pytest.importorskip("onnxruntime", reason="vitlab predict --onnx needs onnxruntime")
    export(ckpt, "onnx", tmp_path / "x")
    proto = onnx.load(tmp_path / "x" / "model.onnx")
    del proto.metadata_props[:]
    (tmp_path / "bare").mkdir()
    onnx.save(proto, tmp_path / "bare" / "model.onnx")
    bare = tmp_path / "bare" / "model.onnx"
    err = fails(capsys, "predict", "--onnx", bare, listed(images)[0])
    assert f"{bare} holds no vitlab preprocessing" in err
    (tmp_path / "bare" / "preprocess.json").write_text((tmp_path / "x" / "preprocess.json").read_text())
    assert run_json(capsys, "predict", "--onnx", bare, listed(images)[0])[0]["top"][0]["class"] in CLASSES


def test_onnx_bad_input(ckpt, images, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime", reason="vitlab predict --onnx needs onnxruntime")
    img = listed(images)[0]
    assert fails(capsys, "predict", "--onnx", tmp_path / "none.onnx", img) == \
        f"vitlab: error: ONNX file not found: {tmp_path / 'none.onnx'}"
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    assert f"cannot read ONNX model {tmp_path / 'bad.onnx'}" in fails(capsys, "predict", "--onnx",
                                                                       tmp_path / "bad.onnx", img)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert fails(capsys, "predict", "--onnx", tmp_path / "bad.onnx", img) == \
        "vitlab: error: vitlab predict --onnx needs ONNX Runtime: pip install onnxruntime"


def test_bad_options(ckpt, images, capsys):
    assert "give a CHECKPOINT and one or more IMAGE" in fails(capsys, "predict", listed(images)[0])
    assert "--batch-size must be 1 or more" in fails(capsys, "predict", ckpt, images, "--batch-size", "0")
