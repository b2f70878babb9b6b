"""Every architecture behind one model interface: the protocol of each registered
model, its rebuild from a checkpoint by `vitlab eval` and `vitlab predict`, the
ResNet baselines against torchvision (golden counts, MACs, logits), the free-form
``model:`` config section, and the bad input around them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import vitlab
from tiny import fails, make_fashion, n_params, write_config
from vitlab import cli
from vitlab.errors import UserError
from vitlab.models import model_defaults, model_family
from vitlab.run import checkpoint
from vitlab import config as cfgmod

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def small_args(name: str) -> dict:
    """Overrides that keep a model's family and width but make it cheap: one block for
    Transformers, an input of two patches per side (ResNets keep their depth)."""
    family = model_family(name)
    if family in ("resnet", "vt"):
        return {}
    if family == "hybrid":
        return {"depth": 1, "img_size": 32}
    return {"depth": 1, "img_size": 2 * model_defaults(name)["patch_size"]}


# --------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("name", vitlab.list_models())
def test_every_model_follows_the_protocol(name):
    torch.manual_seed(0)
    args = small_args(name) | {"num_classes": 3}
    model = vitlab.create_model(name, **args)
    assert model.model_name == name
    assert set(model.model_args) >= set(args) and all(model.model_args[k] == v for k, v in args.items())
    size = args.get("img_size", 32)
    x = torch.randn(2, model.model_args.get("in_chans", 3), size, size)

    feats = model.forward_features(x)
    if model_family(name) == "resnet":
        assert feats.ndim == 4 and feats.shape[:2] == (2, model.num_features)  # (B, C, H, W)
    else:
        assert feats.ndim == 3 and feats.shape[0] == 2 and feats.shape[2] == model.num_features  # (B, N, D)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.num_classes == 3

    # a random head, so that a zero head cannot hide gradients that do not flow
    torch.nn.init.normal_(model.get_classifier().weight, std=0.05)
    logits = model(x)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"

    nwd = model.no_weight_decay()
    assert isinstance(nwd, set) and nwd <= {n for n, _ in model.named_parameters()}

    model.reset_classifier(5)
    assert model.num_classes == 5 and model.model_args["num_classes"] == 5
    model.eval()
    assert torch.count_nonzero(model(x)) == 0  # a zero-initialised head

    # the recorded arguments rebuild the same architecture
    again = vitlab.create_model(model.model_name, **model.model_args)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_builders_have_explicit_signatures():
    from vitlab.models.registry import register

    def loose(**kwargs):
        return torch.nn.Linear(1, 1)

    with pytest.raises(TypeError, match="explicit signature"):
        register("loose", loose, "a builder without a signature", "test")
    assert "loose" not in vitlab.list_models()


def test_list_models_by_family():
    assert vitlab.list_models("resnet") == ["resnet101", "resnet18", "resnet34", "resnet50"]
    assert set(vitlab.list_models("hybrid")) == {"vit_r50_b16", "vit_hybrid_cifar", "vit_c4gf", "vit_mnist_conv"}
    assert "vit_b16" in vitlab.list_models("vit") and "resnet18" not in vitlab.list_models("vit")
    assert vitlab.list_models("vt") == ["vt_resnet18", "vt_resnet34", "vt_resnet50"]
    assert sorted(vitlab.list_models()) == sorted(sum((vitlab.list_models(f) for f in ("vit", "hybrid", "resnet", "vt")), []))


# --------------------------------------------------------------------------- ResNet baselines

# torchvision's figures (its model docs: parameters, GFLOPS = multiply-accumulates at 224 px)
RESNET_GOLDEN = {
    "resnet18": (11_689_512, 1.814e9),
    "resnet34": (21_797_672, 3.664e9),
    "resnet50": (25_557_032, 4.089e9),
    "resnet101": (44_549_160, 7.801e9),
}


@pytest.mark.parametrize("name", sorted(RESNET_GOLDEN))
def test_resnet_params_and_macs(name):
    params, macs = RESNET_GOLDEN[name]
    with torch.device("meta"):
        model = vitlab.create_model(name)
    assert n_params(model) == params
    assert abs(vitlab.count_flops(model, (3, 224, 224)) - macs) / macs < 5e-4


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_resnet_weights_give_torchvision_logits(name, tmp_path):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():  # convolutions are random already; make every BatchNorm tensor differ too
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.add_(torch.randn_like(t) * 0.1)
                m.running_var.add_(torch.rand_like(m.running_var) * 0.2)
    ref.eval()
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    model = vitlab.load_pretrained(vitlab.create_model(name), path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expect = ref(x)
        assert expect.abs().max() > 0.1  # logits of a useful size, not all near zero
        assert (model(x) - expect).abs().max() < 1e-4

    # fine-tuning: a new zero head for 10 classes, every other tensor as loaded
    tuned = vitlab.load_pretrained(vitlab.create_model(name, num_classes=10), path).eval()
    assert torch.count_nonzero(tuned.fc.weight) == 0 and torch.count_nonzero(tuned.fc.bias) == 0
    with torch.no_grad():
        assert torch.allclose(tuned.forward_head(tuned.forward_features(x), pre_logits=True),
                              model.forward_head(model.forward_features(x), pre_logits=True), atol=1e-5)

    # one channel: the RGB filters summed, so a grey image gives the RGB model's answer
    grey = vitlab.load_pretrained(vitlab.create_model(name, in_chans=1), path).eval()
    g = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert (grey(g) - model(g.expand(-1, 3, -1, -1))).abs().max() < 1e-4


def test_torchvision_weights_into_the_cifar_stem_name_the_tensor(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(UserError, match=r"conv1\.weight.*\(64, 3, 7, 7\).*\(64, 3, 3, 3\)"):
        vitlab.load_pretrained(vitlab.create_model("resnet18", stem="cifar"), path)


def test_resnet_stems_and_options():
    x = torch.randn(2, 3, 32, 32)
    assert vitlab.create_model("resnet18").forward_features(x).shape == (2, 512, 1, 1)
    assert vitlab.create_model("resnet18", stem="cifar").forward_features(x).shape == (2, 512, 4, 4)
    assert vitlab.create_model("resnet50", stem="cifar").forward_features(x).shape == (2, 2048, 4, 4)
    m = vitlab.create_model("resnet18", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for layer in (m.layer1, m.layer4) for b in layer)
    assert torch.count_nonzero(vitlab.create_model("resnet18").layer1[0].bn2.weight) > 0
    with pytest.raises(ValueError, match="stem"):
        vitlab.create_model("resnet18", stem="tiny")
    with pytest.raises(ValueError, match="patch_size"):
        vitlab.create_model("resnet18", patch_size=4)


# --------------------------------------------------------------------------- free-form model section


def test_model_section_takes_the_builders_options():
    cfg = cfgmod.from_dict({"model": {"name": "resnet18", "stem": "cifar", "zero_init_residual": True}})
    assert cfg.model.args == {"stem": "cifar", "zero_init_residual": True}
    cfg = cfgmod.from_dict({"model": {"name": "vit_r50_b16", "layers": [3, 4], "img_size": [64, 96]}})
    assert cfg.model.args == {"layers": (3, 4), "img_size": (64, 96)}
    # a resolved config.yaml reads back to the same config
    assert cfgmod.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    # a None value keeps the builder's default (the model section of configs saved by vitlab 0.2)
    cfg = cfgmod.from_dict({"model": {"name": "vit", "depth": 3, "patch_size": None, "dropout": 0.0},
                            "data": {"img_size": 32}})  # the default patch 16 needs a size it divides
    assert cfg.model.args == {"depth": 3, "dropout": 0.0}


@pytest.mark.parametrize("model, message", [
    ({"name": "resnet18", "stme": "cifar"}, "model 'resnet18' has no option 'model.stme' (did you mean 'model.stem'?)"),
    ({"name": "resnet18", "patch_size": 4}, "model 'resnet18' has no option 'model.patch_size'; its options: stem, "
                                            "zero_init_residual"),
    ({"name": "vit", "depht": 3}, "model 'vit' has no option 'model.depht' (did you mean 'model.depth'?)"),
    ({"name": "vit", "depth": "deep"}, "config key 'model.depth' expects an integer, got 'deep'"),
    ({"name": "resnet18", "zero_init_residual": "yes"}, "config key 'model.zero_init_residual' expects true or false"),
    ({"name": "vit_r50_b16", "layers": "3,4"}, "config key 'model.layers' expects a list"),
    ({"name": "vit", "num_classes": 3}, "model.num_classes comes from the dataset"),
    ({"name": "resnet19"}, "unknown model 'resnet19' (did you mean 'resnet18'?)"),
])
def test_bad_model_section_is_one_line(tmp_path, capsys, model, message):
    root = tmp_path / "fashion"
    make_fashion(root, 16, 16)
    cfg = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(root)}, model=model)
    err = fails(capsys, "train", cfg, "--out", tmp_path / "runs" / "r")
    assert message in err
    assert not (tmp_path / "runs").exists()


def test_set_model_name_checks_options_of_the_new_model(tmp_path, capsys):
    root = tmp_path / "fashion"
    make_fashion(root, 16, 16)
    cfg = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(root)})  # a tiny ViT
    err = fails(capsys, "train", cfg, "--out", tmp_path / "r", "--set", "model.name=resnet18")
    assert "model 'resnet18' has no option 'model." in err  # the ViT's keys: img_size, patch_size, ...
    assert not (tmp_path / "r").exists()


def test_hybrid_weights_into_a_plain_vit_are_refused(tmp_path, capsys):
    root = tmp_path / "fashion"
    make_fashion(root, 16, 16)
    weights = tmp_path / "hybrid.pth"
    torch.save(vitlab.create_model("vit_hybrid_cifar", depth=1).state_dict(), weights)
    cfg = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(root), "img_size": 32},
                       model={"name": "vit_cifar", "depth": 1, "pretrained": str(weights)})
    err = fails(capsys, "train", cfg, "--out", tmp_path / "runs" / "r")
    assert "ResNet stem" in err and "vit_r50_b16" in err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- checkpoints of every model


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root, 16, 16)
    img = root / "shoe.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(img)
    return root, img


@pytest.mark.parametrize("name", vitlab.list_models())
def test_every_model_trains_and_is_rebuilt_by_eval_and_predict(name, fashion, tmp_path, capsys):
    root, img = fashion
    args = small_args(name)
    data = {"name": "fashion_mnist", "root": str(root), "img_size": args.pop("img_size", None)}
    cfg = write_config(tmp_path / "c.yaml", data, model={"name": name, **args}, epochs=1, batch_size=8,
                       optimizer="sgd", momentum=0.0, lr=0.01, loggers=[])
    out = tmp_path / "run"
    assert cli.main(["train", str(cfg), "--out", str(out)]) == 0
    ckpt = checkpoint.load(out / "best.pt")
    assert ckpt["model_name"] == name and ckpt["model_args"]["in_chans"] == 1
    val_acc = ckpt["history"][-1]["val_acc"]
    capsys.readouterr()

    assert cli.main(["eval", str(out / "best.pt"), "--json", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 16 and math.isclose(result["top1"], val_acc)  # the rebuilt model scores as trained

    assert cli.main(["predict", str(out / "best.pt"), str(img), "--json", "--top-k", "3"]) == 0
    pred = json.loads(capsys.readouterr().out)
    probs = [t["prob"] for t in pred[0]["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


@pytest.mark.skipif(not FMNIST.is_dir(), reason=f"Fashion-MNIST is not installed at {FMNIST} "
                    "(apt-get install dataset-fashion-mnist)")
def test_resnet18_cifar_stem_trains_on_fashion_mnist(tmp_path, capsys):
    """One-channel 28 px images through the CIFAR stem, with no special flag."""
    cfg = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "train_subset": 2000, "val_subset": 1000},
                       model={"name": "resnet18", "stem": "cifar"}, epochs=1, batch_size=64, optimizer="sgd",
                       lr=0.05, momentum=0.9, weight_decay=5e-4, warmup_epochs=0.2, threads=os.cpu_count() or 1,
                       loggers=[])
    out = tmp_path / "run"
    assert cli.main(["train", str(cfg), "--out", str(out)]) == 0
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["model_args"] == {"in_chans": 1, "num_classes": 10, "stem": "cifar", "zero_init_residual": False}
    assert ckpt["history"][-1]["val_acc"] > 0.5  # chance is 0.1


@pytest.mark.parametrize("preset", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_every_preset_reads_and_names_a_model_it_can_build(preset):
    cfg = cfgmod.load(Path(__file__).parents[1] / "configs" / preset)
    with torch.device("meta"):
        vitlab.create_model(cfg.model.name, **cfg.model.args)
