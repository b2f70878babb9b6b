"""Few-shot linear evaluation (vitlab.fewshot, `vitlab fewshot`): 100% on constructed linearly
separable features, chance on random ones, the fit against scikit-learn's RidgeClassifier with
the same regulariser, the draws, a checkpoint's features (a ViT's and a CNN's), and bad input."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from tiny import fails, make_fashion, write_config
from vitlab import cli, create_model
from vitlab.fewshot import (BIAS_CONSTANT, L2_REG, draw_shots, extract_features, fewshot_accuracy,
                            fewshot_checkpoint, fit_least_squares, parse_shots)
from vitlab.run import checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def separable(n_per_class: int, num_classes: int = 5, dim: int = 12, seed: int = 0):
    """Features of ``num_classes`` classes around means 4 apart in every dimension, noise 0.05:
    linearly separable with a wide margin."""
    g = torch.Generator().manual_seed(seed)
    means = 4.0 * torch.randn(num_classes, dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return means[y] + 0.05 * torch.randn(len(y), dim, generator=g), y


def test_linearly_separable_features_give_100_percent():
    train_x, train_y = separable(30, seed=0)
    test_x, test_y = separable(100, seed=0)  # the same class means
    test_x = test_x + 0.05 * torch.randn(test_x.shape, generator=torch.Generator().manual_seed(1))
    r = fewshot_accuracy(train_x, train_y, test_x, test_y, shots=[1, 5, 10, 25], draws=4)
    assert list(r) == [1, 5, 10, 25]
    for k, s in r.items():
        assert s["accs"] == [1.0] * 4, (k, s)
        assert s["mean"] == 1.0 and s["std"] == 0.0


def test_random_features_give_chance():
    """5 classes, labels independent of the features: each draw's top-1 on 2,000 test images is
    chance, 20%, within 0.05 (a binomial's standard deviation there is 0.009: the bound is 5.6 of them)."""
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(500, 64, generator=g), torch.randn(2000, 64, generator=g)
    train_y, test_y = torch.randint(0, 5, (500,), generator=g), torch.randint(0, 5, (2000,), generator=g)
    r = fewshot_accuracy(train_x, train_y, test_x, test_y, shots=[1, 5, 10, 25], draws=5)
    for s in r.values():
        assert all(abs(a - 0.2) < 0.05 for a in s["accs"]), s


@pytest.mark.parametrize("n_per_class, dim, l2", [(10, 8, L2_REG), (2, 40, L2_REG), (10, 8, 1.0), (3, 64, 0.5)])
def test_the_fit_is_scikit_learns_ridge_classifier(n_per_class, dim, l2):
    """The same {-1, 1} targets and regulariser: RidgeClassifier(alpha=l2, fit_intercept=False) on the
    whitened features with the bias column gives the same weights and predictions, with more images
    than dimensions (the primal solve) and fewer (the dual one)."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(dim)
    c = 5
    means = torch.randn(c, dim, generator=g)
    y = torch.arange(c).repeat_interleave(n_per_class)
    x = means[y] + torch.randn(len(y), dim, generator=g)
    test = torch.randn(300, dim, generator=g) + means[torch.randint(0, c, (300,), generator=g)]
    fit = fit_least_squares(x, y, c, l2)
    ref = sklearn.RidgeClassifier(alpha=l2, fit_intercept=False).fit(fit.design(x).numpy(), y.numpy())
    np.testing.assert_allclose(fit.weight.numpy(), ref.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(fit.predict(test).numpy(), ref.predict(fit.design(test).numpy()))
    # what the design matrix is: each feature standardised on the fit's images, then the bias column
    z = fit.design(x)
    torch.testing.assert_close(z[:, -1], torch.full((len(x),), BIAS_CONSTANT, dtype=torch.float64))
    torch.testing.assert_close(z[:, :-1].mean(0), torch.zeros(dim, dtype=torch.float64), atol=1e-9, rtol=0)
    assert torch.all((z[:, :-1].std(0, unbiased=False) - 1).abs() < 1e-3)


def test_draws_are_seeded_per_class_and_nested():
    labels = torch.arange(5).repeat(20)  # 20 images of each of 5 classes
    a = draw_shots(labels, [1, 5, 10], draws=3, seed=0)
    b = draw_shots(labels, [1, 5, 10], draws=3, seed=0)
    assert all(torch.equal(p[k], q[k]) for p, q in zip(a, b) for k in p)  # reproducible
    assert not torch.equal(a[0][10], a[1][10])  # the draws differ
    for p in a:
        for k, idx in p.items():
            assert len(idx) == 5 * k and len(set(idx.tolist())) == 5 * k
            assert torch.bincount(labels[idx], minlength=5).tolist() == [k] * 5  # k of each class
        assert set(p[5].tolist()) <= set(p[10].tolist())  # within a draw the 5 shots are among the 10
        # big_vision's procedure: class by class, the first k of numpy's permutation of its images
    rng = np.random.default_rng(0)
    first = np.concatenate([rng.permutation(np.flatnonzero(labels.numpy() == c))[:10] for c in range(5)])
    assert a[0][10].tolist() == first.tolist()


def test_parse_shots():
    assert parse_shots("25,1, 10,5") == [1, 5, 10, 25]
    for bad in ("0,5", "five", "", "5,5"):
        with pytest.raises(Exception, match="--shots"):
            parse_shots(bad)


# --------------------------------------------------------------------------- a checkpoint's features


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch tiny ViT on a tiny Fashion-MNIST (10 classes, 12-13 training images each)."""
    d = tmp_path_factory.mktemp("fewshot")
    make_fashion(d / "data", n_train=128, n_test=60)
    cfg = write_config(d / "c.yaml", {"name": "fashion_mnist", "root": str(d / "data")}, loggers=[], epochs=1)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["train", str(cfg), "--out", str(d / "run")]) == 0
    return {"dir": d, "config": cfg, "ckpt": d / "run" / "last.pt"}


def test_checkpoint_gives_the_fit_on_its_pre_logit_features(run):
    """fewshot_checkpoint reads only the drawn training images through the model; its figures are
    those of fewshot_accuracy on the features of the whole training split."""
    r = fewshot_checkpoint(run["ckpt"], run["config"], shots=[1, 3], draws=2, device="cpu")
    assert r["test_images"] == 60 and r["train_images"] == 128 and r["features"] == 32
    assert r["l2_reg"] == 2.0 ** 10 and r["draws"] == 2 and len(r["classes"]) == 10

    from vitlab import config as cfgmod
    from vitlab.data import build_datasets
    from vitlab.data.loader import make_batches

    ckpt = checkpoint.load(run["ckpt"])
    model = checkpoint.build_model(ckpt).eval()
    cfg = cfgmod.load(run["config"])
    train, test, info = build_datasets(cfg.data, 0)
    train.transform = test.transform

    def feats(ds):
        return extract_features(model, make_batches(ds, 50, train=False, data_cfg=cfg.data, info=info,
                                                    device="cpu", seed=0, epoch=0))

    (tx, ty), (vx, vy) = feats(train), feats(test)
    with torch.no_grad():  # the pre-logit features: the head's input
        x = next(iter(make_batches(test, 8, train=False, data_cfg=cfg.data, info=info, device="cpu", seed=0,
                                   epoch=0)))[0]
        torch.testing.assert_close(model.get_classifier()(vx[:8]), model(x), rtol=1e-4, atol=1e-5)
    want = fewshot_accuracy(tx, ty, vx, vy, shots=[1, 3], draws=2, num_classes=10)
    assert r["shots"] == want


def test_a_cnn_gives_its_pooled_features():
    model = create_model("resnet18", num_classes=7, in_chans=1).eval()
    x, y = torch.randn(6, 1, 28, 28), torch.arange(6)
    f, labels = extract_features(model, [(x[:4], y[:4]), (x[4:], y[4:])])
    assert f.shape == (6, 512) and labels.tolist() == list(range(6))
    with torch.no_grad():
        torch.testing.assert_close(f, model.forward_features(x).mean((2, 3)), rtol=1e-5, atol=1e-6)
    assert model.training is False


def test_cli_prints_and_json(run, capsys):
    assert cli.main(["fewshot", str(run["ckpt"]), "--data", str(run["config"]), "--shots", "2,1", "--draws", "2",
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"few-shot linear evaluation of {run['ckpt']}") and "l2 = 1024" in out[0]
    assert out[1].strip().startswith("1-shot:") and out[2].strip().startswith("2-shot:") and "±" in out[1]
    assert cli.main(["fewshot", str(run["ckpt"]), "--data", str(run["config"]), "--shots", "1", "--draws", "1",
                     "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert list(r["shots"]) == ["1"] and r["shots"]["1"]["std"] == 0.0 and len(r["shots"]["1"]["accs"]) == 1


def test_bad_input_exits_2(run, capsys, tmp_path):
    ck, data = str(run["ckpt"]), str(run["config"])
    assert "fewer than 50 shots" in fails(capsys, "fewshot", ck, "--data", data, "--shots", "50")
    assert "--shots" in fails(capsys, "fewshot", ck, "--data", data, "--shots", "0")
    assert "--draws must be 1 or more" in fails(capsys, "fewshot", ck, "--data", data, "--draws", "0")
    assert "config file not found" in fails(capsys, "fewshot", ck, "--data", tmp_path / "none.yaml")
    assert "checkpoint not found" in fails(capsys, "fewshot", tmp_path / "none.pt", "--data", data)
    assert "unknown config key" in fails(capsys, "fewshot", ck, "--data", data, "--set", "data.rooot=x")
    # a dataset of other channels than the model's: an image folder of RGB images
    from PIL import Image
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "rgb" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (28, 28), (40 * i, 90, 200)).save(tmp_path / "rgb" / split / c / f"{i}.png")
    rgb = write_config(tmp_path / "rgb.yaml", {"name": "imagefolder", "root": str(tmp_path / "rgb")})
    err = fails(capsys, "fewshot", ck, "--data", rgb, "--shots", "1")
    assert err.endswith(f"has 3 channel(s) but the model of {ck} takes 1"), err
