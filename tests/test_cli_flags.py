"""One flag vocabulary across commands: --batch-size, --device, --threads, --set section.key=value
and --out DIR mean the same wherever they appear; a renamed flag (bench --batch) and a bare bench
--set key are still read, with a one-line note on stderr."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from PIL import Image

from tiny import fails, make_fashion, write_config
from vitlab import bench, cli
from vitlab.errors import UserError

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

TINY_VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags")
    make_fashion(d / "data")
    # the file asks for 2 threads on any device: the flags must win
    return write_config(d / "tiny.yaml", {"name": "fashion_mnist", "root": str(d / "data")}, epochs=1, threads=2,
                        device="auto", loggers=[])


@pytest.fixture(scope="module")
def run(tmp_path_factory, config):
    out = tmp_path_factory.mktemp("flags-run") / "run"
    assert cli.main(["train", str(config), "--out", str(out), "--threads", "1", "--device", "cpu"]) == 0
    return out


# --------------------------------------------------------------------------- renamed flags


def test_bench_batch_size_and_the_old_spelling(capsys):
    a = cli.build_parser().parse_args(["bench", "--batch-size", "3"])
    assert a.batch_size == 3 and capsys.readouterr().err == ""
    a = cli.build_parser().parse_args(["bench", "--batch", "5"])
    assert a.batch_size == 5
    assert capsys.readouterr().err == "vitlab: note: --batch is now --batch-size\n"
    assert cli.build_parser().parse_args(["bench"]).batch_size == 64


def test_bench_set_takes_the_config_spelling():
    notes = []
    assert bench.parse_overrides(["model.depth=6", "model.pos_embed=none"], notes) == {"depth": 6, "pos_embed": "none"}
    assert notes == []
    assert bench.parse_overrides(["depth=6"], notes) == {"depth": 6}
    assert notes == ["--set depth=6 is now --set model.depth=6"]


def test_bench_old_spellings_still_run_with_their_notes(capsys):
    pytest.importorskip("timm")
    sets = [f"model.{k}={v}" for k, v in TINY_VIT.items() if k != "depth"] + ["depth=1"]
    assert cli.main(["bench", "--model", "vit", "--set", *sets, "--batch", "2", "--rounds", "1", "--threads", "1",
                     "--json"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["batch"] == 2 and r["model_args"]["depth"] == 1 and r["threads"] == 1
    notes = [line for line in captured.err.splitlines() if line.startswith("vitlab: note:")]
    assert notes == ["vitlab: note: --batch is now --batch-size",
                     "vitlab: note: --set depth=1 is now --set model.depth=1"]


# --------------------------------------------------------------------------- --device and --threads


def test_train_device_and_threads_reach_the_config(run, capsys):
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["train"]["threads"], saved["train"]["device"]) == (1, "cpu")
    # resuming may change them (a finished run: nothing more to do)
    assert cli.main(["train", "--resume", str(run), "--device", "cpu", "--threads", "2"]) == 0
    assert "nothing to resume" in capsys.readouterr().out


def test_the_flags_win_over_set_and_are_checked_as_config_values(config, tmp_path, capsys):
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--device", "tpu")
    assert "train.device 'tpu' is not a device" in err
    assert fails(capsys, "train", config, "--threads", "0") == "vitlab: error: --threads must be 1 or more, got 0"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, target, position", [("sweep", "vitlab.sweep.run_sweep", 1),
                                                       ("study", "vitlab.study.run_study", 2),
                                                       ("finetune", "vitlab.config.load", 0)])
def test_device_and_threads_are_config_shorthands(command, target, position, monkeypatch, capsys):
    seen = []

    def stop(config, *args, **kwargs):
        seen.append(args[position])
        raise UserError("stopped")

    monkeypatch.setattr(target, stop)
    extra = {"sweep": ["--grid", "train.lr=1,2"], "study": ["--grid", "train.lr=1,2", "--x", "train.lr"],
             "finetune": ["--weights", "w.pt"]}[command]
    fails(capsys, command, "c.yaml", *extra, "--set", "train.device=cuda", "--device", "cpu", "--threads", "3")
    assert seen == [["train.device=cuda", "train.device=cpu", "train.threads=3"]]  # the last one wins


@pytest.mark.parametrize("argv", [["eval", "x.pt"], ["predict", "x.pt", "x.png"], ["fewshot", "x.pt", "--data", "c"],
                                  ["analyze", "x.pt", "--out", "o"], ["bench"], ["sweep", "c", "--grid", "a=1"],
                                  ["study", "c", "--grid", "a=1", "--x", "a"], ["finetune", "c"]])
def test_threads_below_one(argv, capsys):
    assert "--threads must be 1 or more, got 0" in fails(capsys, *argv, "--threads", "0")


def test_predict_analyze_and_fewshot_threads(monkeypatch, capsys):
    import vitlab.analysis.analyze as analyze
    import vitlab.evaluate as evaluate
    import vitlab.fewshot as fewshot

    before, seen = torch.get_num_threads(), {}
    monkeypatch.setattr(evaluate, "predict", lambda *a, **k: seen.setdefault("predict", torch.get_num_threads()) and [])
    monkeypatch.setattr(analyze, "analyze_checkpoint",
                        lambda *a, **k: seen.setdefault("analyze", torch.get_num_threads()) and [])

    def fake_fewshot(path, data, shots, draws, overrides, **kwargs):
        seen["fewshot"] = list(overrides)
        raise UserError("stopped")

    monkeypatch.setattr(fewshot, "fewshot_checkpoint", fake_fewshot)
    assert cli.main(["predict", "x.pt", "x.png", "--threads", "1"]) == 0
    assert cli.main(["analyze", "x.pt", "--out", "o", "--threads", "1"]) == 0
    capsys.readouterr()
    fails(capsys, "fewshot", "x.pt", "--data", "c", "--set", "data.root=/d", "--threads", "1")
    assert seen == {"predict": 1, "analyze": 1, "fewshot": ["data.root=/d", "train.threads=1"]}
    assert torch.get_num_threads() == before  # given back


def test_every_command_with_these_flags_has_them_with_one_meaning(capsys):
    parser = cli.build_parser()
    commands = re.findall(r"^    ([a-z]+)  ", parser.format_help(), flags=re.M)
    helps = {}
    for c in commands:
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([c, "--help"])
        helps[c] = " ".join(capsys.readouterr().out.split())
    for c in ("train", "finetune", "sweep", "study", "eval", "predict", "fewshot", "bench", "analyze"):
        assert "--threads N" in helps[c], c
    for c in ("train", "finetune", "sweep", "study", "eval", "predict", "fewshot", "bench", "analyze"):
        assert "--device DEVICE" in helps[c], c
    for c in ("eval", "predict", "fewshot", "bench"):
        assert "--batch-size N" in helps[c] and "--batch " not in helps[c], c
    for c, text in helps.items():
        assert "--out" not in text or "--out DIR" in text, c  # --out is always a folder
    for c in ("train", "finetune", "sweep", "study"):
        assert "shorthand for --set train.device=DEVICE" in helps[c] and "shorthand for --set train.threads=N" \
            in helps[c], c
        assert parser.parse_args([c, "x", "--grid", "a=1", "--x", "a"] if c == "study" else
                                 [c, "x", "--grid", "a=1"] if c == "sweep" else [c]).device is None
    text = parser.format_help()
    for flag in ("--batch-size N", "--device DEVICE", "--threads N", "--set section.key=V", "--out DIR"):
        assert flag in text


# --------------------------------------------------------------------------- eval and compare --out


def test_eval_out_is_a_folder(run, tmp_path, capsys):
    out = tmp_path / "new" / "eval"
    assert cli.main(["eval", str(run / "best.pt"), "--out", str(out), "--threads", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "confusion" not in r and r["n"] == 32 and r["out"] == str(out)
    assert (out / "confusion.png").is_file() and (out / "metrics.json").is_file()


def test_eval_out_png_is_still_written_with_a_note(run, tmp_path, capsys):
    png = tmp_path / "conf.png"
    assert cli.main(["eval", str(run / "best.pt"), "--out", str(png)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("vitlab: note: --out is now the folder for eval's outputs; ")
    assert captured.err.count("\n") == 1
    assert captured.out.rstrip().endswith(f"confusion matrix also in {png}")
    with Image.open(png) as im:
        assert im.format == "PNG"


def test_eval_passes_its_options_to_run_eval(monkeypatch, tmp_path, capsys):
    import vitlab.evaluate as evaluate

    seen = {}

    def fake_run_eval(checkpoint, **kwargs):
        seen.update(kwargs, checkpoint=checkpoint)
        return {"out": str(tmp_path), "files": [], "confusion": [[1]], "n": 1}

    monkeypatch.setattr(evaluate, "run_eval", fake_run_eval)
    monkeypatch.setattr(evaluate, "format_eval", lambda r: "formatted")
    assert cli.main(["eval", "c.pt", "--data", "imgs", "--out", "o", "--device", "cpu", "--batch-size", "8",
                     "--threads", "2"]) == 0
    assert capsys.readouterr().out == "formatted\n"
    assert seen == {"checkpoint": "c.pt", "data": "imgs", "out": "o", "overrides": [], "device": "cpu",
                    "batch_size": 8, "threads": 2}
    assert cli.main(["eval", "c.pt", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(tmp_path), "files": [], "n": 1}  # no confusion
    assert "--batch-size must be 1 or more, got 0" in fails(capsys, "eval", "c.pt", "--batch-size", "0")


def test_compare_out_is_made_when_missing(run, tmp_path, capsys):
    out = tmp_path / "a" / "b"
    err = fails(capsys, "compare", run, tmp_path / "nowhere", "--out", out)
    assert "run folder not found" in err and not (tmp_path / "a").exists()  # nothing made for a failure
    assert cli.main(["compare", str(run), "--out", str(out)]) == 0
    assert (out / "compare.csv").is_file() and (out / "compare.png").is_file()
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in fails(capsys, "compare", run, "--out", tmp_path / "file")
