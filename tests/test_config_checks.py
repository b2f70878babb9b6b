"""Every option is checked when the config is read: a bad value ends the command
with exit code 2 and one line naming the key and what is accepted, before any
dataset is opened (the data root below points nowhere) or anything is trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitlab import cli, config as cfgmod
from vitlab.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "fashion_mnist_vit.yaml"

# (override, words the one-line message must hold): three sections, enums, ranges, types, cross-field rules
BAD = [
    ("train.optimizer=adamx", ["train.optimizer", "adamw", "sgd", "did you mean 'adam'"]),
    ("train.schedule=cosin", ["train.schedule", "cosine", "linear", "constant"]),
    ("train.label_smoothing=1.5", ["train.label_smoothing", "[0, 1)"]),
    ("train.lr=inf", ["train.lr", "finite"]),
    ("train.lr=-0.1", ["train.lr", "0 or more"]),
    ("train.amp=fp32", ["train.amp", "bf16", "fp16"]),
    ("train.batch_size=0", ["train.batch_size", "1 or more"]),
    ("train.device=gpu", ["train.device", "cuda:N"]),
    ("train.loggers=[tensorbord]", ["train.loggers", "tensorboard", "wandb"]),
    ("train.clip_grad=0", ["train.clip_grad", "above 0"]),
    ("train.epochs=ten", ["train.epochs", "integer"]),
    ("model.pos_embed=learnd", ["model.pos_embed", "learned", "sincos"]),
    ("model.pool=max", ["model.pool", "cls", "avg"]),
    ("model.patch_size=5", ["patch size (5, 5)", "(28, 28)"]),
    ("model.freeze=head", ["model.freeze", "backbone"]),
    ("model.depht=3", ["model.depht", "did you mean 'model.depth'"]),
    ("data.auto_augment=cifar", ["data.auto_augment", "cifar10"]),
    ("data.holdout=1.5", ["data.holdout", "between 0 and 1"]),
    ("data.name=fashion-mnst", ["data.name", "fashion_mnist"]),
    ("data.mean=[0.5,0.5]", ["data.mean", "one per channel"]),
    ("data.random_erasing=2", ["data.random_erasing"]),
]


@pytest.mark.parametrize("override, words", BAD, ids=[b[0] for b in BAD])
def test_bad_value_exits_2_before_the_data_is_read(tmp_path, capsys, override, words):
    out = tmp_path / "run"
    code = cli.main(["train", str(PRESET), "--out", str(out), "--set", "data.root=/nonexistent", override])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("vitlab: error: "), err
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"
    assert "/nonexistent" not in err and "not found" not in err  # the dataset was never looked for
    assert not out.exists()


def test_the_preset_itself_passes_and_fails_only_on_the_data(tmp_path, capsys):
    """The control: with every value good, the same command gets as far as the dataset."""
    code = cli.main(["train", str(PRESET), "--out", str(tmp_path / "run"), "--set", "data.root=/nonexistent"])
    assert code == 2 and "/nonexistent" in capsys.readouterr().err


def test_sweep_checks_every_grid_point_before_the_first_run(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli.main(["sweep", str(PRESET), "--grid", "train.optimizer=adam,adamx", "--out", str(out),
                     "--set", "train.epochs=1"])
    err = capsys.readouterr().err
    assert code == 2 and "train.optimizer" in err and "adamx" in err
    assert not out.exists()  # nothing was trained, no folder made


def test_duplicate_yaml_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    with pytest.raises(UserError, match="'lr' is given twice \\(lines 2 and 4\\)"):
        cfgmod.load(path)


def test_empty_config_is_refused_as_empty(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(UserError, match="is empty"):
        cfgmod.load(path)


def test_every_preset_passes_the_whole_check():
    """Each preset's model, data and train values pass the check a run makes (no data needed)."""
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(presets) >= 5
    for preset in presets:
        cfg = cfgmod.load(preset)
        cfgmod.check(cfg)  # the full check again, on the loaded config
        assert cfg.model.name
