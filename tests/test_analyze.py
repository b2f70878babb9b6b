"""`vitlab analyze`: the pictures and report of a trained ViT, a CNN's errors without the
ViT-only pictures, the error analysis (galleries, most confident mistakes, per-class
accuracy, confusion matrices) and its numbers, class names in any script in the pictures,
and bad input (exit code 2, one line, no output folder)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import TINY_MODEL, fails, make_fashion, write_config
from vitlab import cli
from vitlab.data import build_datasets
from vitlab.run import checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

VIT_PICTURES = ["rollout.png", "attention_distance.png", "pos_embed_similarity.png", "filters.png"]
ERROR_PICTURES = ["gallery.png", "mistakes.png", "per_class.png", "confusion.png", "confusion_normalised.png"]
ERROR_NUMBERS = ["gallery.csv", "mistakes.csv", "per_class.csv", "confusion.csv", "confusion_normalised.csv"]
PNG = b"\x89PNG\r\n\x1a\n"


def make_folder_dataset(root: Path, classes: list[str], n_train: int = 4, n_val: int = 2) -> Path:
    """An imagefolder tree root/{train,val}/<class>/<i>.png of 28x28 RGB images; class c is a
    bright band at rows 2c..2c+7. Returns root."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (28, 28, 3))
                img[2 * c:2 * c + 8] += 150
                Image.fromarray(img.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("analyze")
    make_fashion(d / "data")
    make_folder_dataset(d / "folder_data", ["cat", "dog", "bird"])
    fashion = {"name": "fashion_mnist", "root": str(d / "data")}
    out = {}
    for name, data, model in (("vit", fashion, TINY_MODEL), ("resnet", fashion, {"name": "resnet18", "stem": "cifar"}),
                              ("folder", {"name": "imagefolder", "root": str(d / "folder_data")}, TINY_MODEL)):
        cfg = write_config(d / f"{name}.yaml", data, model, epochs=1, loggers=[])
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["train", str(cfg), "--out", str(d / name)]) == 0
        out[name] = d / name
    out["folder_data"] = d / "folder_data"
    return out


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_vit_analysis_writes_every_picture_and_the_report(runs, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(runs["vit"] / "best.pt"), "--out", str(out), "--num-images", "4",
                     "--distance-images", "16"]) == 0
    report = (out / "report.md").read_text()
    assert "parameters; images: the test split of `fashion_mnist`." in report  # Fashion-MNIST validates on test
    for name in VIT_PICTURES + ERROR_PICTURES + ["curves.png"]:
        assert (out / name).read_bytes()[:8] == PNG, name
        assert f"]({name})" in report
    for data in ("rollout.json", "attention_distance.csv", "pos_embed_similarity.json", "filters.json",
                 *ERROR_NUMBERS):
        assert (out / data).stat().st_size > 0
        assert f"`{data}`" in report
    assert "32 images: top-1" in report  # the whole tiny test split
    assert "| T-shirt/top |" in report and "report.html" in capsys.readouterr().out
    assert "## Training run" in report and "| epoch |" in report  # metrics.csv's last row
    assert (out / "report.html").read_text(encoding="utf-8").count("<img ") == report.count("![")


def test_error_numbers_agree_with_eval(runs, tmp_path):
    """The error analysis counts as `vitlab eval` does; the galleries' CSVs hold what their
    pictures show, the mistakes ordered by confidence."""
    from vitlab.evaluate import evaluate_checkpoint

    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(runs["vit"] / "best.pt"), "--out", str(out), "--gallery", "5",
                     "--distance-images", "4"]) == 0
    r = evaluate_checkpoint(runs["vit"] / "best.pt")
    counts = [[int(v) for v in list(row.values())[1:]] for row in read_csv(out / "confusion.csv")]
    assert torch.equal(torch.tensor(counts), r["confusion"])
    # both against a count made here, image by image, from the model and the test split
    ckpt = checkpoint.load(runs["vit"] / "best.pt")
    model = checkpoint.build_model(ckpt).eval()
    cfg = checkpoint.config(ckpt)
    cfg.data.val_subset = None  # the whole split
    _, test_set, _ = build_datasets(cfg.data, 0)
    by_hand = torch.zeros(10, 10, dtype=torch.long)
    with torch.no_grad():
        for i in range(len(test_set)):
            x, y = test_set[i]
            by_hand[y, int(model(x[None]).argmax())] += 1
    assert by_hand.sum() == r["n"] == len(test_set)
    assert torch.equal(by_hand, r["confusion"])
    assert r["top1"] == pytest.approx(by_hand.diag().sum().item() / len(test_set))
    fractions = torch.tensor([[float(v) for v in list(row.values())[1:]]
                              for row in read_csv(out / "confusion_normalised.csv")])
    assert torch.allclose(fractions.sum(1), torch.ones(10), atol=1e-5)
    per_class = read_csv(out / "per_class.csv")
    assert [row["class"] for row in per_class] == r["classes"]
    assert [float(row["accuracy"]) for row in per_class] == pytest.approx(list(r["per_class"].values()), abs=1e-6)
    assert f"top-1 {100 * r['top1']:.2f}%, top-5 {100 * r['top5']:.2f}%" in (out / "report.md").read_text()

    shown = read_csv(out / "gallery.csv")
    assert [int(row["index"]) for row in shown] == [0, 8, 16, 23, 31]  # spread over the 32 images
    mistakes = read_csv(out / "mistakes.csv")
    wrong = r["n"] - int(r["confusion"].diag().sum())
    assert len(mistakes) == min(5, wrong)
    assert all(row["correct"] == "0" and row["true"] != row["predicted"] for row in mistakes)
    conf = [float(row["confidence"]) for row in mistakes]
    assert conf == sorted(conf, reverse=True) and all(0 < c <= 1 for c in conf)


def test_gallery_and_mistakes_computed(tmp_path):
    from vitlab.analysis.gallery import confident_mistakes, denormalise, gallery_indices, prediction_rows
    from vitlab.metrics import error_summary

    preds = {"target": torch.tensor([0, 1, 2, 1, 0]), "pred": torch.tensor([0, 2, 2, 0, 1]),
             "confidence": torch.tensor([0.9, 0.6, 0.8, 0.95, 0.6]), "loss": torch.ones(5),
             "top5": torch.tensor([True, True, True, True, False])}
    assert confident_mistakes(preds, 10).tolist() == [3, 1, 4]  # by confidence, ties by index
    assert confident_mistakes(preds, 1).tolist() == [3]
    rows = prediction_rows(preds, torch.tensor([3]), ["a", "b", "c"])
    assert rows == [{"index": 3, "true": "b", "predicted": "a", "confidence": pytest.approx(0.95),
                     "correct": False}]
    s = error_summary(preds, ["a", "b", "c"])
    assert (s["n"], s["wrong"], s["top1"], s["top5"], s["per_class_count"]) == (5, 3, 0.4, 0.8, [2, 2, 1])
    assert s["per_class"] == {"a": 0.5, "b": 0.0, "c": 1.0}
    assert gallery_indices(3, 16).tolist() == [0, 1, 2]
    assert gallery_indices(100, 4).tolist() == [0, 33, 66, 99]
    x = torch.tensor([0.0, 1.0, -10.0]).view(1, 1, 3, 1)  # normalised with mean 0.5, std 0.25
    assert denormalise(x, [0.5], [0.25]).flatten().tolist() == [0.5, 0.75, 0.0]  # clamped to [0, 1]


def test_rollout_images_are_taken_in_turn_from_each_class(runs, tmp_path, capsys):
    """The folder run's validation split is stored class by class (2 images each of 3 classes):
    the rollout shows min(images, classes) classes, not the first class twice; with 3 classes the
    report gives no top-5 (it would be 100%)."""
    import json

    for n, classes in ((2, 2), (4, 3)):
        out = tmp_path / f"analysis{n}"
        assert cli.main(["analyze", str(runs["folder"] / "best.pt"), "--out", str(out), "--num-images", str(n),
                         "--distance-images", "4", "--gallery", "4"]) == 0
        labels = json.loads((out / "rollout.json").read_text())["labels"]
        assert len(labels) == n and len(set(labels)) == classes
        report = (out / "report.md").read_text()
        assert f"{n} images of the split, taken in turn from each class" in report
        assert "top-1" in report and "top-5" not in report.lower()
        assert "top-5" not in capsys.readouterr().out.lower()
    assert labels == ["bird", "cat", "dog", "bird"]  # the classes in order, then again
    out = tmp_path / "fashion"  # 10 classes: top-5 is shown
    assert cli.main(["analyze", str(runs["vit"] / "best.pt"), "--out", str(out), "--num-images", "10",
                     "--distance-images", "4", "--gallery", "4"]) == 0
    assert len(set(json.loads((out / "rollout.json").read_text())["labels"])) == 10
    assert "top-5" in (out / "report.md").read_text()


def test_class_spread_indices():
    from vitlab.analysis.gallery import class_spread_indices

    targets = torch.tensor([2, 0, 0, 1, 0, 2, 1])
    assert class_spread_indices(targets, 7).tolist() == [1, 3, 0, 2, 6, 5, 4]  # round-robin, split order within
    assert class_spread_indices(targets, 3).tolist() == [1, 3, 0]
    assert class_spread_indices(targets, 100).tolist() == [1, 3, 0, 2, 6, 5, 4]
    assert class_spread_indices(torch.zeros(4, dtype=torch.long), 2).tolist() == [0, 1]
    assert class_spread_indices(targets, 0).tolist() == []


def test_cnn_gets_errors_and_the_reason_for_each_skipped_picture(runs, tmp_path):
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(runs["resnet"] / "best.pt"), "--out", str(out), "--gallery", "4"]) == 0
    report = (out / "report.md").read_text()
    assert not any((out / p).exists() for p in VIT_PICTURES)
    assert all((out / p).read_bytes()[:8] == PNG for p in ERROR_PICTURES if p != "mistakes.png")
    assert len(read_csv(out / "gallery.csv")) == 4 and "32 images: top-1" in report
    skipped = [line for line in report.splitlines() if line.startswith("- ") and "skipped (" in line]
    assert len([s for s in skipped if "'resnet18'" in s and "Vision Transformer" in s]) == 4


def test_image_files_get_the_vit_pictures_and_no_error_analysis(runs, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(runs["vit"] / "best.pt"), "--out", str(out), "--images", str(folder)]) == 0
    report = (out / "report.md").read_text()
    assert (out / "rollout.png").is_file() and not (out / "gallery.png").exists()
    assert "skipped (the image files given have no labels" in report


# Class names in three scripts; the CJK one needs a CJK font, which DejaVu Sans is not.
CYRILLIC = ["Кошка", "Собака", "Ёжик"]
CJK = ["猫", "犬", "고양이", "ねこ"]


def _glyph_problems(draw, caplog) -> list[str]:
    """The "Glyph ... missing from font(s)" warnings and font-not-found log records of ``draw()``."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "matplotlib"):
        warnings.simplefilter("always")
        caplog.clear()
        draw()
    return ([str(w.message) for w in caught if "missing from font" in str(w.message)]
            + [r.getMessage() for r in caplog.records if "findfont" in r.getMessage()])


def _draw_with(family: str, text: str) -> None:
    from vitlab.plotting import new_figure, png_bytes

    fig = new_figure(figsize=(2, 1))
    fig.text(0.1, 0.5, text, family=family)
    png_bytes(fig)


@pytest.mark.parametrize("classes", [CYRILLIC, CJK], ids=["cyrillic", "cjk"])
def test_class_names_in_any_script_render(classes, tmp_path, caplog):
    from vitlab.analysis.gallery import plot_confusion_matrix, plot_gallery, plot_per_class
    from vitlab.metrics import error_summary
    from vitlab.plotting import font_families

    cjk_fonts = [f for f in font_families() if "CJK" in f or f.startswith(("WenQuanYi", "Droid Sans", "Source Han"))]
    if classes is CJK and not cjk_fonts:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-wqy-microhei, or fonts-noto-cjk)")
    # the check can fail: a font without these letters draws them with a warning
    assert _glyph_problems(lambda: _draw_with("cmr10" if classes is CYRILLIC else "DejaVu Sans", classes[0]),
                           caplog)
    k = len(classes)
    preds = {"target": torch.arange(k), "pred": torch.arange(k).roll(1), "confidence": torch.full((k,), 0.7),
             "loss": torch.ones(k), "top5": torch.ones(k, dtype=torch.bool)}
    rows = [{"index": i, "true": classes[i], "predicted": classes[(i - 1) % k], "confidence": 0.7,
             "correct": False} for i in range(k)]
    s = error_summary(preds, classes)

    def draw():
        plot_gallery(torch.zeros(k, 3, 8, 8), rows, tmp_path / "g.png", [0.5] * 3, [0.25] * 3, title=classes[0])
        plot_per_class(s, tmp_path / "p.png")
        plot_confusion_matrix(s["confusion"], classes, tmp_path / "c.png", normalised=True)
    assert _glyph_problems(draw, caplog) == []
    assert read_csv(tmp_path / "g.csv")[0]["true"] == classes[0]  # the numbers keep the names whole


def test_bad_input(runs, tmp_path, capsys):
    not_a_checkpoint = tmp_path / "x.pt"
    not_a_checkpoint.write_bytes(b"no")
    assert "cannot read checkpoint" in fails(capsys, "analyze", not_a_checkpoint, "--out", tmp_path / "a")
    missing = tmp_path / "missing.png"
    assert "missing.png" in fails(capsys, "analyze", runs["vit"] / "best.pt", "--out", tmp_path / "b",
                                  "--images", missing)
    assert "data.* settings only" in fails(capsys, "analyze", runs["vit"] / "best.pt", "--out", tmp_path / "c",
                                           "--set", "train.lr=1")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "not an empty folder" in fails(capsys, "analyze", runs["vit"] / "best.pt", "--out", tmp_path / "full")
    assert not any((tmp_path / d).exists() for d in "abc")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_bad_input_checkpoint_that_is_not_a_run(runs, tmp_path, capsys):
    from vitlab import create_model

    weights = tmp_path / "weights.pt"  # a model's weights, saved outside a run
    model = create_model("vit", **{k: v for k, v in TINY_MODEL.items() if k != "name"}, num_classes=10, in_chans=1)
    torch.save({"model": model.state_dict(), "model_name": "vit"}, weights)
    err = fails(capsys, "analyze", weights, "--out", tmp_path / "a")
    assert "not the checkpoint of a vitlab run" in err and "config" in err and "best.pt" in err
    state_dict = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), state_dict)
    assert "not a vitlab checkpoint" in fails(capsys, "analyze", state_dict, "--out", tmp_path / "b")
    assert not any((tmp_path / d).exists() for d in "ab")


def test_bad_input_images(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    assert "no image files in this folder" in fails(capsys, "analyze", runs["vit"] / "best.pt", "--out",
                                                    tmp_path / "a", "--images", empty)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(PNG + b"\x00" * 40)
    err = fails(capsys, "analyze", runs["vit"] / "best.pt", "--out", tmp_path / "b", "--images", corrupt)
    assert "corrupt.png" in err and "cannot read image" in err
    assert "--gallery" in fails(capsys, "analyze", runs["vit"] / "best.pt", "--out", tmp_path / "c",
                                "--gallery", "0")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_corrupt_image_in_the_split_leaves_no_output(runs, tmp_path, capsys, monkeypatch):
    """A corrupt file of the validation split is read after the output folder is made (one that went
    bad after the check before reading): the folder is removed again, or emptied again when it was
    there, empty, before."""
    import vitlab.data.datasets as datasets
    monkeypatch.setattr(datasets, "find_bad_images", lambda *a, **k: [])
    data = tmp_path / "data"
    shutil.copytree(runs["folder_data"], data)
    (data / "val" / "dog" / "1.png").write_bytes(PNG + b"\x00" * 40)
    ckpt = runs["folder"] / "best.pt"
    err = fails(capsys, "analyze", ckpt, "--out", tmp_path / "a", "--set", f"data.root={data}")
    assert "cannot read image" in err and "1.png" in err
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    fails(capsys, "analyze", ckpt, "--out", tmp_path / "b", "--set", f"data.root={data}")
    assert list((tmp_path / "b").iterdir()) == []
    assert "3 channels" in fails(capsys, "analyze", runs["vit"] / "best.pt", "--out", tmp_path / "c",
                                 "--set", "data.name=imagefolder", "--set", f"data.root={data}")
