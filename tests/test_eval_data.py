"""vitlab eval on labelled data: every image of a folder of class folders (or of its test/
folder), never a split of it; unreadable files skipped and listed; outputs side by side in a
folder named for the data; and the run's own split, named for what it is."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import write_config
from vitlab import cli
from vitlab.errors import UserError
from vitlab.evaluate import evaluate_checkpoint, format_eval, predict, run_eval

CLASSES = ["bird", "cat", "dog"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread (conftest restores the count)."""
    torch.set_num_threads(1)


def make_tree(root: Path, classes=CLASSES, n: int = 5, seed: int = 0) -> list[Path]:
    """root/<class>/<i>.png|jpg, 28x28 RGB, class c a bright band at rows 8c..8c+7; the
    files in sorted order (PNG and JPEG alternating)."""
    rng = np.random.default_rng(seed)
    files = []
    for name in classes:
        c = CLASSES.index(name)
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 60, (28, 28, 3))
            img[8 * c:8 * c + 8] += 150
            path = root / name / f"{i}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(img.astype(np.uint8)).save(path)
            files.append(path)
    return files


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 1-epoch run on one tree of class folders (10 images a class; 10% held out)."""
    d = tmp_path_factory.mktemp("evaldata")
    make_tree(d / "photos", n=10)
    cfg = write_config(d / "tiny.yaml", {"name": "imagefolder", "root": str(d / "photos")}, epochs=1, loggers=[])
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.setenv("XDG_CACHE_HOME", str(d / "cache"))
        assert cli.main(["train", str(cfg), "--out", str(d / "run")]) == 0
    return d / "run"


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_image_of_a_folder_tree_is_evaluated(run, tmp_path):
    tree = tmp_path / "testphotos"
    good = make_tree(tree, seed=5)
    bad = truncated_jpeg(tree / "cat" / "broken.jpg")
    notes = tree / "dog" / "notes.txt"
    notes.write_text("not an image")
    r = run_eval(run / "best.pt", tree)

    assert r["read"] == r["n"] == len(good) == 15  # every readable image, not a split
    assert r["skipped"] == [{"path": str(bad), "reason": r["skipped"][0]["reason"]}]
    assert "truncated" in r["skipped"][0]["reason"]
    assert r["ignored"] == [{"path": str(notes), "reason": "not an image file (no image extension)"}]
    assert sum(map(sum, r["confusion"])) == 15
    assert r["top5"] is None and r["classes"] == CLASSES and r["absent"] == []
    assert r["per_class_count"] == {c: 5 for c in CLASSES}
    assert r["data"] == f"{tree} (class folders)" and r["data_folder"] == str(tree.resolve())

    out = run / "eval-best-testphotos"
    assert r["out"] == str(out)
    assert r["files"] == [str(out / f) for f in ("confusion.png", "metrics.json", "predictions.csv", "skipped.txt")]
    assert json.loads((out / "metrics.json").read_text()) == r
    assert (out / "skipped.txt").read_text() == (f"{bad}: {r['skipped'][0]['reason']}\n"
                                                 f"{notes}: ignored, not an image file (no image extension)\n")
    with Image.open(out / "confusion.png") as im:
        assert im.format == "PNG"
    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == ["path", "true", "predicted", "prob", "correct"]
    assert [row["path"] for row in rows] == [str(p) for p in good]
    assert [row["true"] for row in rows] == [p.parent.name for p in good]
    assert sum(int(row["correct"]) for row in rows) == round(r["top1"] * 15)
    # the images are read and transformed as `vitlab predict` reads them
    errors = []
    mine = predict(run / "best.pt", [str(tree)], top_k=1, errors=errors)
    assert [m["image"] for m in mine] == [row["path"] for row in rows] and len(errors) == 1
    for m, row in zip(mine, rows):
        assert m["top"][0]["class"] == row["predicted"]
        assert m["top"][0]["prob"] == pytest.approx(float(row["prob"]), abs=1e-5)

    text = format_eval(r).splitlines()
    assert text[0] == (f"evaluated 15 images of {tree} (class folders), skipped 1 unreadable, ignored 1 other file "
                       f"(see {out / 'skipped.txt'})")
    assert text[1].startswith("top-1 ") and "top-5" not in text[1] and " loss " in text[1]
    assert [line.split()[0] for line in text[2:5]] == CLASSES and text[2].endswith("(5 images)")
    assert text[-1] == f"outputs: {out}"


def test_a_test_folder_beside_train_is_what_is_evaluated(run, tmp_path):
    make_tree(tmp_path / "set" / "train", n=2)
    make_tree(tmp_path / "set" / "test", n=3, seed=7)
    r = run_eval(run / "best.pt", tmp_path / "set")
    test = tmp_path / "set" / "test"
    assert r["read"] == 9 and r["data"] == f"{test} (class folders)"
    assert r["notes"] == [f"only {test} is evaluated, not the other folders of {tmp_path / 'set'} (train)"]
    assert Path(r["out"]) == run / "eval-best-set"
    assert all(row["path"].startswith(str(test)) for row in read_csv(Path(r["out"]) / "predictions.csv"))
    assert not (Path(r["out"]) / "skipped.txt").exists()
    # the test folder given itself: the same images, named for both folders
    r2 = run_eval(run / "best.pt", test)
    assert r2["read"] == 9 and Path(r2["out"]) == run / "eval-best-set-test" and r2["confusion"] == r["confusion"]


def test_unknown_class_folders_are_refused(run, tmp_path):
    make_tree(tmp_path / "a")
    (tmp_path / "a" / "cats").mkdir()
    with pytest.raises(UserError) as e:
        run_eval(run / "best.pt", tmp_path / "a")
    assert str(e.value) == (f"{tmp_path / 'a'} has a folder that is not a class of the checkpoint: cats "
                            "(did you mean 'cat'?); the checkpoint's classes: bird, cat, dog")
    make_tree(tmp_path / "b" / "train")  # training images only: no test/ folder
    with pytest.raises(UserError, match=r"not a class of the checkpoint: train; to evaluate test images"):
        run_eval(run / "best.pt", tmp_path / "b")
    with pytest.raises(UserError, match="data folder not found"):
        run_eval(run / "best.pt", tmp_path / "none")
    with pytest.raises(UserError, match="does not apply to a data folder"):
        run_eval(run / "best.pt", tmp_path / "a", overrides=["data.img_size=32"])
    assert not list(run.glob("eval-*-a")) and not list(run.glob("eval-*-b"))


def test_classes_without_images_are_reported(run, tmp_path):
    make_tree(tmp_path / "two", classes=["bird", "cat"])
    (tmp_path / "two" / "dog").mkdir()  # an empty class folder
    (tmp_path / "two" / "README.txt").write_text("outside the class folders")
    r = run_eval(run / "best.pt", tmp_path / "two", out=tmp_path / "o")
    assert r["read"] == 10 and r["absent"] == ["dog"] and r["per_class"]["dog"] is None
    readme = str(tmp_path / "two" / "README.txt")
    assert r["ignored"] == [{"path": readme, "reason": "not in a class folder (no label)"}]
    assert format_eval(r).splitlines()[4] == "  dog   no images"


def test_different_data_never_share_an_output_folder(run, tmp_path):
    for d in ("x/photos", "y/photos"):
        make_tree(tmp_path / d, n=2)
    (tmp_path / "y" / "photos" / "dog" / "0.jpg").unlink()
    rx = run_eval(run / "best.pt", tmp_path / "x" / "photos")
    ry = run_eval(run / "best.pt", tmp_path / "y" / "photos")
    assert Path(rx["out"]) == run / "eval-best-photos" and Path(ry["out"]) == run / "eval-best-photos-2"
    assert json.loads((run / "eval-best-photos" / "metrics.json").read_text())["read"] == 6
    assert json.loads((run / "eval-best-photos-2" / "metrics.json").read_text())["read"] == 5
    again = run_eval(run / "best.pt", tmp_path / "x" / "photos")  # the same data: its own folder again
    assert again["out"] == rx["out"]
    last = run_eval(run / "last.pt", tmp_path / "x" / "photos")  # another checkpoint of the run
    assert Path(last["out"]) == run / "eval-last-photos"


def test_a_given_folder_is_made_and_an_old_skipped_list_removed(run, tmp_path):
    tree = tmp_path / "t"
    make_tree(tree, n=2)
    truncated_jpeg(tree / "bird" / "z.jpg")
    out = tmp_path / "new" / "eval"
    assert (Path(run_eval(run / "best.pt", tree, out=out)["out"]) / "skipped.txt").is_file()
    (tree / "bird" / "z.jpg").unlink()
    r = run_eval(run / "best.pt", tree, out=out)
    assert not (out / "skipped.txt").exists() and sorted(p.name for p in out.iterdir()) == [
        "confusion.png", "metrics.json", "predictions.csv"]
    assert r["skipped"] == [] and "skipped" not in format_eval(r).splitlines()[0]


def test_nothing_readable_is_one_error(run, tmp_path):
    truncated_jpeg((tmp_path / "bad" / "cat").mkdir(parents=True) or tmp_path / "bad" / "cat" / "a.jpg")
    with pytest.raises(UserError, match=r"none of the 1 image files under .* can be read \(the first: .*a\.jpg: "):
        run_eval(run / "best.pt", tmp_path / "bad", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_the_runs_own_split_says_what_it_is(run):
    r = run_eval(run / "best.pt")
    assert r["read"] == 3  # 10% of each class of 10 held out
    photos = run.parent / "photos"
    assert r["data"] == (f"the 10% validation split held out of the training folder {photos} "
                         "(data.val_fraction=0.1, seed 0)")
    assert "held-out part" in r["notes"][0]
    assert Path(r["out"]) == run / "eval-best-holdout-split" and r["data_folder"] is None
    old = evaluate_checkpoint(run / "best.pt")
    assert old["n"] == 3 and old["top1"] == pytest.approx(r["top1"])
    assert [row["path"] for row in read_csv(Path(r["out"]) / "predictions.csv")][0].startswith(str(photos))
    # every image of the same folder is evaluated when it is given as the data folder
    whole = run_eval(run / "best.pt", photos)
    assert whole["read"] == 30 and "trained on" in whole["notes"][0]


def test_the_run_split_of_another_folder_is_named_and_checked(run, tmp_path):
    """`--set data.root=DIR` evaluates the run's kind of split of DIR, and says so; class
    folders named otherwise than the checkpoint's classes are refused, not mislabelled."""
    make_tree(tmp_path / "mine", n=10, seed=3)
    r = run_eval(run / "best.pt", overrides=[f"data.root={tmp_path / 'mine'}"])
    assert r["read"] == 3 and r["data"].startswith(f"the 10% validation split held out of the training folder "
                                                   f"{tmp_path / 'mine'} ")
    assert Path(r["out"]) == run / "eval-best-holdout-split-2"  # not the folder of the run's own split
    (tmp_path / "mine" / "cat").rename(tmp_path / "mine" / "kitten")
    with pytest.raises(UserError, match=r"has classes that are not the checkpoint's: kitten \(the checkpoint's: "
                                        r"bird, cat, dog\).*give it as the data folder"):
        run_eval(run / "best.pt", overrides=[f"data.root={tmp_path / 'mine'}"])


def test_a_class_name_with_a_slash_is_a_folder_with_an_underscore(tmp_path):
    from vitlab import create_model
    from vitlab.run import checkpoint

    classes = ["Bag", "T-shirt/top", "Trouser"]
    model = create_model("vit", img_size=28, patch_size=7, in_chans=1, num_classes=3, embed_dim=16, depth=1,
                         num_heads=2, mlp_dim=16)
    path = tmp_path / "model.pt"
    checkpoint.save({"model": model.state_dict(), "model_name": "vit", "model_args": model.model_args,
                     "config": {"data": {"name": "fashion_mnist", "img_size": None}},
                     "dataset": {"name": "fashion_mnist", "num_classes": 3, "in_chans": 1, "img_size": 28,
                                 "mean": [0.286], "std": [0.353], "classes": classes}}, path)
    for folder in ("Bag", "T-shirt_top"):
        (tmp_path / "shop" / folder).mkdir(parents=True)
        Image.new("L", (28, 28), 90).save(tmp_path / "shop" / folder / "a.png")
    r = run_eval(path, tmp_path / "shop", device="cpu")
    assert r["per_class_count"] == {"Bag": 1, "T-shirt/top": 1, "Trouser": 0} and r["absent"] == ["Trouser"]
    assert Path(r["out"]) == tmp_path / "eval-model-shop"
