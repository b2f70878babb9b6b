"""Masked patch prediction (train.objective=mpp): the corruption rates, the 3-bit colour targets, a
loss that sees only corrupted positions, and the journey: pre-train, interrupt and resume exactly,
fine-tune from the checkpoint; a CNN is refused."""

from __future__ import annotations

import logging

import pytest
import torch

import vitlab
from tiny import TINY_MODEL, fails, make_fashion, signal_after_step, write_config
from vitlab import cli
from vitlab.run import checkpoint
from vitlab.train.objectives import MASK, RANDOM, MaskedPatchPrediction

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def mpp_for(chans: int = 3, size: int = 32, patch: int = 4) -> MaskedPatchPrediction:
    torch.manual_seed(0)
    model = vitlab.create_model("vit", img_size=size, patch_size=patch, in_chans=chans, embed_dim=32, depth=1,
                                num_heads=2, mlp_dim=64, num_classes=10)
    return MaskedPatchPrediction(model, (0.5,) * chans, (0.25,) * chans)


def test_corruption_rates():
    """Exactly half of each image's patches; of those 80% mask token, 10% random patch, 10% kept,
    within 0.01 (the standard deviation of each fraction over 64,000 draws is under 0.0016)."""
    m = mpp_for()
    corrupted, masked, randomised = m.corruption(2000, 64, "cpu")
    assert (corrupted.sum(1) == 32).all()
    assert not (masked & randomised).any() and not (masked & ~corrupted).any() and not (randomised & ~corrupted).any()
    total = corrupted.sum().item()
    assert abs(masked.sum().item() / total - MASK) < 0.01
    assert abs(randomised.sum().item() / total - RANDOM) < 0.01
    assert abs((corrupted & ~masked & ~randomised).sum().item() / total - (1 - MASK - RANDOM)) < 0.01
    per_position = corrupted.float().mean(0)  # every position as likely as any other
    assert (per_position - 0.5).abs().max() < 0.05


def test_targets_are_the_3_bit_mean_colours():
    m = mpp_for(size=8, patch=4)
    # four 4x4 patches of known mean colours (in [0, 1]), normalised as the data pipeline does
    colours = torch.tensor([[0.05, 0.30, 0.95], [0.55, 0.80, 0.20], [0.99, 0.0, 0.45], [0.13, 0.62, 0.70]])
    img = torch.zeros(1, 3, 8, 8)
    for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        img[0, :, r:r + 4, c:c + 4] = colours[k][:, None, None]
    img[0, 0, 0, 0] += 0.04  # not uniform inside a patch: the mean decides
    img[0, 0, 0, 1] -= 0.04
    levels = [[0, 2, 7], [4, 6, 1], [7, 0, 3], [1, 4, 5]]  # floor(8 x colour)
    want = torch.tensor([[64 * r + 8 * g + b for r, g, b in levels]])
    assert torch.equal(m.targets((img - 0.5) / 0.25), want)
    grey = mpp_for(chans=1, size=8, patch=4)
    assert grey.classes == 8
    assert torch.equal(grey.targets((img[:, :1] - 0.5) / 0.25), torch.tensor([[0, 4, 7, 1]]))


def test_only_corrupted_positions_enter_the_loss():
    m = mpp_for()
    x = torch.randn(4, 3, 32, 32)
    seen = {}
    real_corruption, real_features = m.corruption, m.model.forward_features

    def _record(args):
        out = real_corruption(*args)
        seen["corrupted"] = out[0]
        return out

    def features(images, corrupt=None):
        out = real_features(images, corrupt=corrupt)
        out.retain_grad()
        seen["tokens"] = out
        return out

    m.corruption = lambda *args: _record(args)
    m.model.forward_features = features
    loss, _ = m(x)
    loss.backward()
    grad = seen["tokens"].grad[:, m.model.num_prefix_tokens:]  # (B, N, D), the patch tokens
    corrupted = seen["corrupted"]
    assert grad[~corrupted].abs().max() == 0  # no gradient from an uncorrupted position's prediction
    assert (grad[corrupted].abs().sum(-1) > 0).all()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root)
    return {"name": "fashion_mnist", "root": str(root)}


def mpp_config(path, data, **train):
    return write_config(path, data, TINY_MODEL, loggers=[], objective="mpp", **train)


def test_pretrain_resume_exactly_then_finetune(tmp_path, data, monkeypatch, capsys, caplog):
    straight, out = tmp_path / "straight", tmp_path / "run"
    cfg = mpp_config(tmp_path / "c.yaml", data)
    assert cli.main(["train", str(cfg), "--out", str(straight)]) == 0
    assert "best validation MPP loss" in capsys.readouterr().out

    signal_after_step(monkeypatch, 6)  # epoch 2, step 2 of 4
    assert cli.main(["train", str(cfg), "--out", str(out)]) == 130
    monkeypatch.undo()
    assert checkpoint.load(out / "last.pt")["skip_samples"] == 32
    assert cli.main(["train", "--resume", str(out)]) == 0
    a, b = checkpoint.load(straight / "last.pt"), checkpoint.load(out / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["objective"]:  # the mask token and the prediction head too
        assert torch.equal(a["objective"][k], b["objective"][k]), k
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    best = min(a["history"], key=lambda r: r["val_loss"])["epoch"]
    assert checkpoint.load(straight / "best.pt")["epoch"] == best  # best.pt follows the validation loss
    from vitlab.compare import compare_runs, format_markdown
    row = compare_runs([straight])[0]
    assert row["objective"] == "mpp" and row["best_epoch"] == best and row["train_images"] == 2 * 64
    assert "(MPP)" in format_markdown([row])
    assert "masked patch prediction" in (straight / "model_card.md").read_text()
    capsys.readouterr()
    for argv in (["eval", straight / "best.pt"], ["predict", straight / "best.pt", straight / "curves.png"]):
        err = fails(capsys, *argv)  # its classification head never trained
        assert "masked-patch-prediction (pre-training) run" in err and "vitlab finetune" in err

    # fine-tuning takes the model's weights and leaves the pre-training parts out, saying so
    model = vitlab.create_model("vit", **{k: v for k, v in TINY_MODEL.items() if k != "name"}, in_chans=1,
                                num_classes=10)
    with caplog.at_level(logging.WARNING, logger="vitlab.weights"):
        vitlab.load_pretrained(model, straight / "best.pt")
    assert "left out the masked-patch-prediction parts" in caplog.text and "mask_token" in caplog.text
    ckpt = checkpoint.load(straight / "best.pt")
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], ckpt["model"]["blocks.0.attn.qkv.weight"])
    ft = write_config(tmp_path / "ft.yaml", data, TINY_MODEL, loggers=[], epochs=1)
    assert cli.main(["finetune", str(ft), "--weights", str(straight / "best.pt"), "--out", str(tmp_path / "ft")]) == 0
    assert checkpoint.load(tmp_path / "ft" / "last.pt")["history"][0]["val_acc"] > 0


def test_a_cnn_is_refused(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "c.yaml", data, {"name": "resnet18", "stem": "cifar"}, loggers=[], objective="mpp")
    err = fails(capsys, "train", cfg, "--out", tmp_path / "run")
    assert "train.objective=mpp needs a ViT" in err and "resnet18" in err
    assert not (tmp_path / "run").exists()


def test_an_unlabelled_folder_pretrains(tmp_path, capsys):
    """data.labels=none: every image under the folder, any depth, no classes; a classifier is refused."""
    from PIL import Image

    for i in range(24):
        d = tmp_path / "photos" / ("a" if i % 2 else "b/c")
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (10 * i, 255 - 10 * i, 128)).save(d / f"{i:03d}.png")
    model = {"name": "vit", "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2,
             "mlp_dim": 64}
    data = {"name": "imagefolder", "root": str(tmp_path / "photos"), "labels": "none"}
    cfg = write_config(tmp_path / "c.yaml", data, model, loggers=[], objective="mpp", epochs=1, batch_size=8)
    assert cli.main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    assert ckpt["dataset"]["classes"] == ["image"] and ckpt["objective"]["head.weight"].shape == (512, 32)
    capsys.readouterr()
    cls = write_config(tmp_path / "d.yaml", data, model, loggers=[], epochs=1)
    assert "data.labels=none (unlabelled images) needs train.objective=mpp" in fails(capsys, "train", cls)
