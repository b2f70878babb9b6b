"""`vitlab analyze`: the pictures and report of a trained ViT, a CNN's errors without the
ViT-only pictures, and bad input (exit code 2, one line, no output folder)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tiny import TINY_MODEL, fails, make_fashion, write_config
from vitlab import cli

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

VIT_PICTURES = ["rollout.png", "attention_distance.png", "pos_embed_similarity.png", "filters.png"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("analyze")
    make_fashion(d / "data")
    out = {}
    for name, model in (("vit", TINY_MODEL), ("resnet", {"name": "resnet18", "stem": "cifar"})):
        cfg = write_config(d / f"{name}.yaml", {"name": "fashion_mnist", "root": str(d / "data")}, model,
                           epochs=1, loggers=[])
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["train", str(cfg), "--out", str(d / name)]) == 0
        out[name] = d / name
    return out


def test_vit_analysis_writes_every_picture_and_the_report(runs, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(runs["vit"] / "best.pt"), "--out", str(out), "--num-images", "4",
                     "--distance-images", "16"]) == 0
    report = (out / "report.md").read_text()
    for name in VIT_PICTURES + ["confusion.png"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in report
    for data in ("rollout.json", "attention_distance.csv", "pos_embed_similarity.json", "filters.json"):
        assert (out / data).stat().st_size > 0
    assert "32 images: top-1" in report  # the whole tiny test split
    assert "| T-shirt/top |" in report and "report:" in capsys.readouterr().out


def test_cnn_gets_errors_and_the_reason_for_each_skipped_picture(runs, tmp_path):
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(runs["resnet"] / "best.pt"), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert (out / "confusion.png").is_file() and not any((out / p).exists() for p in VIT_PICTURES)
    assert report.count("skipped (") == 4 and "'resnet18'" in report


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
