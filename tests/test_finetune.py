"""Fine-tuning mechanics: `vitlab finetune`, a new zero head, resampling, runs measured in steps,
freezing, the model card, longer runs on resume, `--set a=1 b=2`, and `vitlab sweep`."""

from __future__ import annotations

import hashlib

import pytest
import torch

import vitlab.sweep as sweep
import vitlab
from tiny import TINY_MODEL, fails, make_fashion, signal_after_step, write_config
from vitlab import cli
from vitlab.run import checkpoint
from vitlab import config as cfgmod
from vitlab.train.engine import Trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root, 128, 40)
    return {"name": "fashion_mnist", "root": str(root)}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data):
    """A finished 2-epoch run of the tiny ViT at 28 px: its best.pt is the weights file."""
    d = tmp_path_factory.mktemp("pre")
    cfg = write_config(d / "pre.yaml", data, loggers=[])
    assert cli.main(["train", str(cfg), "--out", str(d / "run")]) == 0
    return d / "run" / "best.pt"


TINY_MODEL_ARGS = {k: v for k, v in TINY_MODEL.items() if k != "name"}


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetune_starts_from_the_weights_with_a_zero_head_at_a_new_resolution(tmp_path, data, pretrained):
    model = {k: v for k, v in TINY_MODEL.items() if k != "img_size"}  # built at the data's size
    cfg = cfgmod.load(write_config(tmp_path / "ft.yaml", data, model, loggers=[]), ["data.img_size=42"])
    cfg.model.pretrained = str(pretrained)
    t = Trainer(cfg, tmp_path / "run")
    head = t.model.get_classifier()
    assert head.weight.abs().sum() == 0 and head.bias.abs().sum() == 0
    src = checkpoint.load(pretrained)["model"]
    torch.testing.assert_close(t.model.patch_embed.proj.weight, src["patch_embed.proj.weight"])
    torch.testing.assert_close(t.model.blocks[0].mlp.fc1.weight, src["blocks.0.mlp.fc1.weight"])
    assert t.model.pos_embed.shape[1] == 1 + 6 * 6 != src["pos_embed"].shape[1]  # 4x4 resampled to 6x6
    # below a zero head, only the head gets a gradient on the first step
    x = torch.randn(4, 1, 42, 42)
    torch.nn.functional.cross_entropy(t.model(x), torch.arange(4)).backward()
    assert head.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in t.model.named_parameters()
               if not n.startswith("head"))


def test_finetune_command_model_card_and_resume_without_the_weights_file(tmp_path, data, pretrained, monkeypatch,
                                                                        capsys):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(pretrained.read_bytes())
    cfg = write_config(tmp_path / "ft.yaml", data, loggers=[], epochs=2)
    out = tmp_path / "run"
    signal_after_step(monkeypatch, 10)  # epoch 2, step 2 of 8
    assert cli.main(["finetune", str(cfg), "--weights", str(weights), "--out", str(out)]) == 130
    monkeypatch.undo()
    card = (out / "model_card.md").read_text()
    assert hashlib.sha256(weights.read_bytes()).hexdigest() in card and "weights.pt" in card
    head = "head replaced: the file's 10-class head not kept (model.keep_head is false), zero-initialised"
    assert head in card and "in progress" in card
    weights.unlink()  # the run's own last.pt holds everything a resume needs
    assert cli.main(["finetune", "--resume", str(out)]) == 0
    card = (out / "model_card.md").read_text()
    assert "finished: 2 of 2 epochs" in card and hashlib.sha256(pretrained.read_bytes()).hexdigest() in card
    assert head in card  # kept in the checkpoints: the card of the resumed run still says it
    assert "frozen" not in capsys.readouterr().out


def _weights_file(path, **model) -> str:
    """The state dict of a tiny grey ViT (jittered, so that a loaded tensor is told from a new one)."""
    net = vitlab.create_model("vit", **{**TINY_MODEL_ARGS, "in_chans": 1, **model})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in net.state_dict().values():
            t.add_(torch.randn(t.shape, generator=g) * 0.1)
    torch.save(net.state_dict(), path)
    return str(path)


def _finetune(tmp_path, capsys, data, weights, model=None, **train) -> tuple[str, str]:
    """`vitlab finetune` for one step: (what it printed, the model card)."""
    cfg = write_config(tmp_path / "ft.yaml", data, model, loggers=[], steps=1, **train)
    out = tmp_path / "run"
    assert cli.main(["finetune", str(cfg), "--weights", weights, "--out", str(out)]) == 0
    return capsys.readouterr().out, (out / "model_card.md").read_text()


def test_finetune_states_what_fitting_the_weights_changed_in_the_log_and_the_card(tmp_path, data, capsys):
    """Weights at 28 px (a 4x4 grid) with a 5-class head, into a 42 px model (6x6) for the 10 classes."""
    weights = _weights_file(tmp_path / "w.pth", img_size=28, num_classes=5)
    model = {k: v for k, v in TINY_MODEL.items() if k != "img_size"}
    log, card = _finetune(tmp_path, capsys, {**data, "img_size": 42}, weights, model)
    lines = [line for line in log.splitlines() if line.startswith("pretrained weights:")]
    assert lines == [f"pretrained weights: {weights} (timm/vitlab layout, 18 tensors): position embeddings "
                     "resampled from grid 4x4 to 6x6 (bicubic); head replaced: 5 classes -> 10 classes, "
                     "zero-initialised"]
    assert "- source weights: `w.pth`" in card and "(timm/vitlab layout); fitted to the model:\n" \
        "  - position embeddings resampled from grid 4x4 to 6x6 (bicubic)\n" \
        "  - head replaced: 5 classes -> 10 classes, zero-initialised\n" in card
    assert card.count("resampled") == 1  # in the model section only, not again among the notes


def test_finetune_where_nothing_had_to_change_says_so(tmp_path, data, capsys):
    weights = _weights_file(tmp_path / "w.pth", num_classes=10)
    log, card = _finetune(tmp_path, capsys, data, weights, {**TINY_MODEL, "keep_head": True})
    assert f"pretrained weights: {weights} (timm/vitlab layout, 20 tensors): every tensor loaded as it is" in log
    assert "(timm/vitlab layout); every tensor loaded as it is" in card
    for said in ("resampled", "replaced", "zero-initialised", "dropped", "adapted"):
        assert said not in log and said not in card


def test_finetune_bad_input(tmp_path, data, pretrained, capsys):
    cfg = write_config(tmp_path / "ft.yaml", data, loggers=[])
    assert "weights file not found" in fails(capsys, "finetune", cfg, "--weights", tmp_path / "none.pt",
                                             "--out", tmp_path / "a")
    assert "needs --weights" in fails(capsys, "finetune", cfg, "--out", tmp_path / "b")
    other = write_config(tmp_path / "other.yaml", data, {**TINY_MODEL, "embed_dim": 64}, loggers=[])
    fails(capsys, "finetune", other, "--weights", pretrained, "--out", tmp_path / "c")  # another architecture
    assert not any((tmp_path / n).exists() for n in "abc")


def test_length_in_steps_ends_in_the_middle_of_an_epoch(tmp_path, data):
    cfg = cfgmod.load(write_config(tmp_path / "s.yaml", data, loggers=[]), ["train.steps=11"])  # 8 per epoch
    t = Trainer(cfg, tmp_path / "run")
    t.fit()
    assert t.scheduler.last_epoch == 11 and len(t.history) == 2
    assert [r["train_images"] for r in t.history] == [128, 3 * 16]
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine reached its end


def test_a_finished_run_resumed_longer_trains_the_extra_epochs(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "c.yaml", data, loggers=[], epochs=1)
    out = tmp_path / "run"
    assert cli.main(["train", str(cfg), "--out", str(out)]) == 0
    assert cli.main(["train", "--resume", str(out)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(out), "--set", "train.epochs=3"]) == 0
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["epoch"] == 3 and [r["epoch"] for r in ckpt["history"]] == [1, 2, 3]
    assert cfgmod.load(out / "config.yaml").train.epochs == 3


def test_freeze_backbone_keeps_every_other_parameter_bit_identical(tmp_path, data, pretrained):
    cfg = cfgmod.load(write_config(tmp_path / "f.yaml", data, loggers=[], epochs=1), ["model.freeze=backbone"])
    cfg.model.pretrained = str(pretrained)
    t = Trainer(cfg, tmp_path / "run")
    before = _params(t.model)
    t.fit()
    after = _params(t.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    trainable = {id(p) for p in t.model.get_classifier().parameters()}
    assert {id(p) for g in t.optimizer.param_groups for p in g["params"]} == trainable
    assert set(map(id, t.optimizer.state)) <= trainable


def test_freeze_blocks_freezes_the_embedding_and_the_first_blocks(tmp_path, data):
    model = {**TINY_MODEL, "depth": 2}
    cfg = cfgmod.load(write_config(tmp_path / "f.yaml", data, model, loggers=[], epochs=1),
                      ["model.freeze_blocks=1"])
    t = Trainer(cfg, tmp_path / "run")
    before = _params(t.model)
    t.fit()
    after = _params(t.model)
    same = {k for k in before if torch.equal(before[k], after[k])}
    assert {k for k in before if k.startswith(("patch_embed.", "blocks.0.")) or k in ("cls_token", "pos_embed")} \
        == same
    assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith(("blocks.1.", "head", "norm")))


def test_freeze_bad_input(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "f.yaml", data, loggers=[])
    assert "unknown model.freeze 'all'" in fails(capsys, "train", cfg, "--set", "model.freeze=all",
                                                  "--out", tmp_path / "a")
    assert "has 1 blocks" in fails(capsys, "train", cfg, "--set", "model.freeze_blocks=3", "--out", tmp_path / "b")
    resnet = write_config(tmp_path / "r.yaml", data, {"name": "resnet18", "stem": "cifar"}, loggers=[])
    assert "needs a model with transformer blocks" in fails(capsys, "train", resnet, "--set",
                                                            "model.freeze_blocks=1", "--out", tmp_path / "c")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_set_takes_several_values_after_one_flag(tmp_path, data):
    cfg = write_config(tmp_path / "c.yaml", data)
    args = cli.build_parser().parse_args(["train", str(cfg), "--set", "train.lr=0.5", "train.epochs=7",
                                          "--set", "data.hflip=true"])
    assert args.set == ["train.lr=0.5", "train.epochs=7", "data.hflip=true"]
    loaded = cfgmod.load(cfg, args.set)
    assert (loaded.train.lr, loaded.train.epochs, loaded.data.hflip) == (0.5, 7, True)


# --- vitlab sweep ---------------------------------------------------------------------------------

def test_sweep_picks_the_working_lr_retrains_it_and_resumes_without_retraining(tmp_path, data, monkeypatch, capsys):
    cfg = write_config(tmp_path / "c.yaml", data, loggers=[], epochs=2, batch_size=16)
    out = tmp_path / "sweep"
    argv = ["sweep", str(cfg), "--grid", "train.lr=0,0.003", "--set", "data.holdout=0.25", "--out", str(out),
            "--min-holdout-per-class", "0"]  # 3 images a class: ranked anyway, as asked
    real_run, calls = sweep._run, []

    def run_then_stop(*args):  # the sweep is killed after its first run
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return real_run(*args)

    monkeypatch.setattr(sweep, "_run", run_then_stop)
    assert cli.main(argv) == 130
    monkeypatch.undo()
    first = out / "train.lr=0" / "last.pt"
    stamp = first.stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert first.stat().st_mtime_ns == stamp  # read again, not trained again
    printed = capsys.readouterr().out
    assert "best on the 25% holdout: train.lr=0.003" in printed
    rows = (out / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("run,train.lr,split,best_acc")
    assert [r.split(",")[2] for r in rows[1:]] == ["holdout", "holdout", "test"]
    final = checkpoint.load(out / "final-train.lr=0.003" / "last.pt")
    assert final["config"]["data"]["holdout"] == 0 and final["config"]["train"]["lr"] == 0.003
    held = checkpoint.load(out / "train.lr=0.003" / "last.pt")
    assert held["config"]["data"]["holdout"] == 0.25
    assert "**best**" in (out / "sweep.md").read_text()


def test_sweep_bad_input(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "c.yaml", data, loggers=[])
    assert "unknown config key 'train.lrr'" in fails(capsys, "sweep", cfg, "--grid", "train.lrr=1,2",
                                                      "--out", tmp_path / "a")
    assert "has no values" in fails(capsys, "sweep", cfg, "--grid", "train.lr=", "--out", tmp_path / "b")
    assert "holdout" in fails(capsys, "sweep", cfg, "--grid", "train.lr=0.1", "--set", "data.holdout=1.5",
                              "--out", tmp_path / "c")
    assert not any((tmp_path / n).exists() for n in "abc")
