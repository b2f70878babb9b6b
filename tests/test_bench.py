"""`vitlab bench`: what it reports, that the two models it times compute the same thing, and
every kind of bad input (exit code 2, one line). Tiny models, one or two rounds on the CPU.

No speed is asserted here: speeds are measured (benchmarks/RESULTS.md), never asserted in tests."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

import vitlab
from tiny import fails
from vitlab import bench, cli
from vitlab.bench import references
from vitlab.errors import UserError

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10)
TINY_SET = [f"model.{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def timm():
    """timm, for the tests that compare with it; they are skipped without it, the others run."""
    return pytest.importorskip("timm")


@pytest.fixture(scope="module")
def result(timm) -> dict:
    threads = torch.get_num_threads()
    r = bench.run_bench("vit", overrides=TINY, batch=4, rounds=2, threads=1, min_seconds=0)
    assert torch.get_num_threads() == threads  # the thread count is given back
    return r


def _finite_positive(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


# --------------------------------------------------------------------------- the result


def test_result_has_the_fields(result):
    for key in ("model", "family", "model_args", "params", "reference", "reference_model", "device", "device_name",
                "torch", "timm", "torchvision", "python", "threads", "batch", "img_size", "in_chans", "amp",
                "compile", "rounds", "iters", "max_abs_logit_diff", "tolerance", "macs_per_image", "peak_tflops",
                "mfu_note", "phases"):
        assert key in result, key
    assert result["reference"] == "timm" and result["reference_model"].endswith("VisionTransformer")
    assert (result["device"], result["threads"], result["batch"], result["img_size"]) == ("cpu", 1, 4, [16, 16])
    assert result["torch"] == torch.__version__ and result["amp"] == "none" and result["compile"] is False
    assert result["iters"] == {"train": 1, "inference": 1}
    assert result["macs_per_image"] == vitlab.count_flops(vitlab.create_model("vit", **TINY), (3, 16, 16))
    assert set(result["phases"]) == {"train", "inference"}
    for phase in result["phases"].values():
        for lib in ("vitlab", "reference"):
            assert len(phase[lib]["ms"]) == 2  # one timing per round
            for key in ("median_ms", "min_ms", "images_per_s", "tflops_per_s"):
                assert _finite_positive(phase[lib][key]), (lib, key)
            assert phase[lib]["images_per_s"] == pytest.approx(4 / phase[lib]["median_ms"] * 1e3)
    json.dumps(result)  # JSON-ready


def test_ratios_are_positive_finite_numbers(result):
    for phase in result["phases"].values():
        assert _finite_positive(phase["ratio"]) and _finite_positive(phase["paired_ratio"])
        assert phase["ratio"] == pytest.approx(phase["reference"]["median_ms"] / phase["vitlab"]["median_ms"])


def test_same_weights_give_the_same_logits_and_it_is_reported(result):
    diff = result["max_abs_logit_diff"]
    assert isinstance(diff, float) and 0 <= diff <= 1e-5
    assert f"max |logit difference| {diff:.2e}" in bench.format_markdown(result)


def test_no_mfu_on_the_cpu(result):
    assert result["peak_tflops"] is None
    for phase in result["phases"].values():
        assert phase["vitlab"]["mfu"] is None and phase["reference"]["mfu"] is None
    assert "MFU not reported on the CPU" in result["mfu_note"]
    assert "MFU |" not in bench.format_markdown(result)


def test_markdown_says_machine_and_settings(result):
    md = bench.format_markdown(result)
    for text in (result["device_name"], f"torch {torch.__version__}", "1 CPU thread", "batch 4", "image 3x16x16",
                 "| train step", "| inference", "timm/vitlab", "2 rounds"):
        assert text in md, text


def test_markdown_shows_mfu_where_a_peak_is_known(result):
    r = json.loads(json.dumps(result))
    r["peak_tflops"] = 989.0
    for phase in r["phases"].values():
        for lib in ("vitlab", "reference"):
            phase[lib]["mfu"] = 0.4321
    md = bench.format_markdown(r)
    assert "vitlab MFU" in md and "timm MFU" in md and "43.2%" in md


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("options", [
    {}, dict(pool="avg"), dict(pool="avg", fc_norm=True), dict(pool="avg", class_token=True),
    dict(layer_scale=1e-5), dict(pos_embed="none"), dict(distilled=True),
    dict(embed_dim=28, mlp_dim=61),  # int(28 * (61 / 28)) is 60: the MLP ratio must not round down
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_timm_twin_takes_the_weights_and_gives_the_logits(timm, options):
    ours = vitlab.create_model("vit", **{**TINY, **options})
    theirs = bench.timm_twin(ours.model_args)
    references.same_weights(ours, theirs)
    diff, scale = references.logit_difference(ours, theirs, torch.randn(2, 3, 16, 16))
    assert scale > 0 and diff <= 1e-5


def test_resnet_against_torchvision():
    r = bench.run_bench("resnet18", img_size=32, batch=2, rounds=1, threads=1, min_seconds=0)
    assert r["reference"] == "torchvision" and r["reference_model"] == "torchvision.models.resnet18"
    assert r["img_size"] == [32, 32] and r["max_abs_logit_diff"] <= 1e-5
    assert all(_finite_positive(p["paired_ratio"]) for p in r["phases"].values())
    assert "torchvision/vitlab" in bench.format_markdown(r)


def test_cifar_stem_resnet_twin():
    ours = vitlab.create_model("resnet18", stem="cifar", in_chans=1, num_classes=10)
    theirs = bench.torchvision_twin("resnet18", ours.model_args)
    references.same_weights(ours, theirs)
    assert references.logit_difference(ours, theirs, torch.randn(2, 1, 16, 16))[0] <= 1e-5


def test_hybrid_is_timed_alone():
    r = bench.run_bench("vit_hybrid_cifar", overrides=dict(width=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64),
                        batch=2, rounds=1, threads=1, min_seconds=0)
    assert r["reference"] is None and r["max_abs_logit_diff"] is None
    for phase in r["phases"].values():
        assert phase["reference"] is None and phase["ratio"] is None
        assert _finite_positive(phase["vitlab"]["images_per_s"])
    md = bench.format_markdown(r)
    assert "vitlab alone" in md and "paired" not in md


def test_auto_device_is_the_gpu_where_there_is_one():
    r = bench.run_bench("vit_hybrid_cifar", overrides=dict(width=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64),
                        device="auto", batch=2, rounds=1, threads=1, min_seconds=0)
    assert r["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")  # a GPU is named with its index


def test_different_outputs_stop_the_bench(timm, monkeypatch):
    # run_bench copies the weights with references.same_weights: patched, each model keeps its own init
    monkeypatch.setattr(references, "same_weights", lambda ours, theirs: None)
    with pytest.raises(bench.OutputMismatch, match="different logits"):
        bench.run_bench("vit", overrides=TINY, batch=2, rounds=1, threads=1, min_seconds=0)


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L4", 121), ("NVIDIA GeForce RTX 4090", 165), ("NVIDIA A10", 125),
    ("Tesla V100-SXM2-32GB", 125), ("NVIDIA L40S", None), ("NVIDIA A10G", None), ("NVIDIA GeForce GTX 1080", None),
])
def test_peak_table(name, expected):
    peak = bench.peak_tflops(name)
    assert (peak[1] if peak else None) == expected


# --------------------------------------------------------------------------- the command


def test_cli_json(timm, capsys):
    assert cli.main(["bench", "--model", "vit", "--set", *TINY_SET, "--batch-size", "2", "--rounds", "1",
                     "--threads", "1", "--json"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["model"] == "vit" and r["batch"] == 2 and r["rounds"] == 1 and r["model_args"]["depth"] == 1
    assert "round 1/1" in captured.err  # progress on stderr, JSON alone on stdout


def test_cli_markdown(timm, capsys):
    assert cli.main(["bench", "--model", "vit", "--set", *TINY_SET, "--img-size", "8", "--batch-size", "2",
                     "--rounds", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### vitlab bench: vit vs timm") and "image 3x8x8" in out and "| train step" in out


@pytest.mark.parametrize("args, message", [
    (["--model", "vit_nope"], "unknown model 'vit_nope'"),
    (["--rounds", "0"], "--rounds must be 1 or more"),
    (["--batch-size", "0"], "--batch-size must be 1 or more"),
    (["--threads", "0"], "--threads must be 1 or more"),
    (["--device", "tpu"], "--device 'tpu' is not a device"),
    (["--device", "meta"], "--device 'meta': vitlab runs on auto, cpu, cuda or cuda:N"),
    (["--model", "vit_cifar", "--img-size", "30"], "not divisible by patch size"),
    (["--model", "vit", "--set", "model.pos_embed=sincos"], "timm's VisionTransformer has no pos_embed='sincos'"),
    (["--model", "vit", "--set", "model.representation_size=8"], "no representation layer"),
    (["--model", "vit_cifar", "--set", "depth"], "--set takes KEY=VALUE"),
    (["--model", "vit_cifar", "--set", "model.num_classes=0"], "num_classes of 1 or more"),
    (["--model", "vit_cifar", "--set", "train.lr=0.1"], "--set train.lr: vitlab bench takes the model's options"),
    (["--model", "vit_cifar", "--set", "model.name=vit_b16"], "give the model with --model"),
])
def test_bad_input(capsys, args, message):
    assert message in fails(capsys, "bench", *args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda(capsys, device):
    assert "CUDA is not available" in fails(capsys, "bench", "--device", device)


def test_without_timm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(UserError, match="timm is not installed"):
        bench.timm_twin(vitlab.create_model("vit", **TINY).model_args)
    assert "pip install timm" in fails(capsys, "bench", "--model", "vit_cifar")


def test_bad_usage_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--amp", "fp16"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err
