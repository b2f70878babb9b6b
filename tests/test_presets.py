"""Presets by name: the YAML presets ship inside the package (configs/ links to them), `vitlab
presets` lists them, and a bare name (`vitlab train fashion_mnist_vit`) reads the preset from any
folder; an unknown name is one line with the closest preset."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tiny import fails, make_fashion
from vitlab import cli
from vitlab import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "src" / "vitlab" / "presets"


def test_presets_are_package_resources_and_configs_links_to_them():
    shipped = sorted(p.name for p in (resources.files("vitlab") / "presets").iterdir() if p.name.endswith(".yaml"))
    assert len(shipped) >= 19 and "fashion_mnist_vit.yaml" in shipped
    assert shipped == sorted(p.name for p in PRESETS.glob("*.yaml"))
    assert (ROOT / "configs").is_symlink() and os.readlink(ROOT / "configs") == "src/vitlab/presets"
    assert sorted(p.name for p in (ROOT / "configs").glob("*.yaml")) == shipped  # documented paths still work
    assert list(cfgmod.presets()) == [n.removesuffix(".yaml") for n in shipped]


def test_presets_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "presets/*.yaml" in project["tool"]["setuptools"]["package-data"]["vitlab"]


def test_every_preset_has_a_header_line_and_is_listed(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = dict(line.split(None, 1) for line in out if line and not line.startswith("`"))
    assert list(listed) == list(cfgmod.presets())
    for name, path in cfgmod.presets().items():
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and listed[name] == first[2:].strip(), name
    assert out[-1].startswith("`vitlab train NAME` runs one") and str(PRESETS) in out[-1]


def test_preset_title():
    assert cfgmod.preset_title(PRESETS / "fashion_mnist_vit.yaml") == \
        "A small patch-7 ViT trained from scratch on Fashion-MNIST on a CPU: the studies' model."


def test_a_bare_name_is_a_preset_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cfgmod.find_config("fashion_mnist_vit") == PRESETS / "fashion_mnist_vit.yaml"
    cfg = cfgmod.load("fashion_mnist_vit", ["train.epochs=1"])
    assert (cfg.model.name, cfg.data.name, cfg.train.epochs) == ("vit_mnist", "fashion_mnist", 1)
    # a path is a path: a folder in it, or a .yaml ending, or a file of that name here
    for path in ("./fashion_mnist_vit", "sub/fashion_mnist_vit", "fashion_mnist_vit.yaml"):
        assert cfgmod.find_config(path) == Path(path)
    (tmp_path / "fashion_mnist_vit").write_text("train: {epochs: 3}\n")
    assert cfgmod.find_config("fashion_mnist_vit") == Path("fashion_mnist_vit")


def test_unknown_preset_is_one_line_with_the_closest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = fails(capsys, "train", "fashion_mnist_vti")
    assert err == ("vitlab: error: no preset named 'fashion_mnist_vti' (did you mean 'fashion_mnist_vit'?); "
                   "`vitlab presets` lists them (a config file is a path ending in .yaml)")
    for argv in (["finetune", "cifar10_vt", "--weights", "w.pt"], ["sweep", "cifar10_vt", "--grid", "train.lr=1,2"],
                 ["study", "cifar10_vt", "--grid", "model.depth=1,2", "--x", "model.depth"]):
        assert "no preset named 'cifar10_vt'" in fails(capsys, *argv)
    assert not list(tmp_path.iterdir())  # no run folder


def test_a_documented_path_outside_the_repository_names_the_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = fails(capsys, "train", "configs/cifar10_vit.yaml")
    assert err == ("vitlab: error: config file not found: configs/cifar10_vit.yaml (vitlab ships a preset of that "
                   "name: give `cifar10_vit` instead of the path)")
    assert fails(capsys, "train", "none.yaml") == "vitlab: error: config file not found: none.yaml"


def test_train_a_preset_by_name_from_another_folder(tmp_path, monkeypatch, capsys):
    """The demo's preset, named from a folder that has no configs/, on a tiny Fashion-MNIST; the
    --device and --threads shorthands land in the run's config.yaml."""
    make_fashion(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "fashion_mnist_vit", "--out", "run", "--set", f"data.root={tmp_path / 'data'}",
                     "train.epochs=1", "train.loggers=[]", "train.progress=false", "--threads", "1",
                     "--device", "cpu"]) == 0
    assert "model vit_mnist: 205,962 parameters" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    preset = yaml.safe_load((PRESETS / "fashion_mnist_vit.yaml").read_text())
    assert saved["model"]["name"] == preset["model"]["name"] and saved["train"]["lr"] == preset["train"]["lr"]
    assert (saved["train"]["epochs"], saved["train"]["threads"], saved["train"]["device"]) == (1, 1, "cpu")
