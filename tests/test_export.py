"""vitlab export: every format, every family it takes, loaded by the library that
reads it (timm, transformers, ONNX Runtime, torch.export.load) and giving
vitlab's logits; timm and Hugging Face weights through vitlab and back are the
same tensors; bad input is one line, exit code 2, nothing written.

Every model has non-default options and every tensor of it jittered (heads
start at zero: an untouched weight would compare zeros with zeros)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tiny import fails
from vitlab import cli, create_model, load_pretrained
from vitlab.export import FORMATS, export
from vitlab.export import graph, to_timm
from vitlab.run import checkpoint

CLASSES = ["T-shirt", "Hose", "Käfer", "cat", "dog", "ship", "truck"]  # 7, one not ASCII
TOL = 1e-4  # fp32 logits


@pytest.fixture(autouse=True)
def offline_one_thread(monkeypatch):
    """Nothing here may reach the network (the consumers read local folders), and torch runs
    on one thread (tiny models; on a busy machine a second thread makes them many times slower).
    conftest restores the thread count."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- models


@torch.no_grad()
def jitter(model: torch.nn.Module, shape: tuple[int, ...] | None = None, seed: int = 0,
           scale: float = 0.1) -> torch.nn.Module:
    """Noise on every floating tensor of the state dict. With the input ``shape`` (C, H, W),
    batch-norm statistics are then those of random inputs through the noisy weights, so
    that the logits stay of order 1 (a ResNet's would grow to 1e5 with noisy statistics)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if t.is_floating_point():
            t.add_(torch.randn(t.shape, generator=g) * scale)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if shape is not None and norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # the plain average over the batches
        model.train()
        for _ in range(3):
            model(torch.randn(8, *shape, generator=g))
        for m in norms:
            m.momentum = 0.1
    return model.eval()


def write_checkpoint(path: Path, model: torch.nn.Module, in_chans: int, img_size: int) -> Path:
    """A vitlab run checkpoint of ``model`` (as `vitlab train` writes, less the history)."""
    mean, std = ([0.3], [0.35]) if in_chans == 1 else ([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    checkpoint.save({
        "model": model.state_dict(), "model_name": model.model_name, "model_args": model.model_args,
        "config": {"data": {"name": "folder", "img_size": img_size}},
        "dataset": {"name": "folder", "num_classes": len(CLASSES), "in_chans": in_chans, "img_size": img_size,
                    "mean": mean, "std": std, "classes": CLASSES},
    }, path)
    return path


VIT = dict(num_classes=7, embed_dim=32, depth=2, num_heads=2, mlp_dim=48)
MODELS = {  # name -> (registered model, options, channels, input size)
    "vit_avg_fcnorm_ls": ("vit", dict(VIT, img_size=48, patch_size=4, pool="avg", class_token=True, fc_norm=True,
                                      layer_scale=0.1), 1, 48),
    "vit_cls_fcnorm_nopos": ("vit", dict(VIT, img_size=48, patch_size=8, fc_norm=True, pos_embed="none"), 3, 48),
    "vit_avg_notoken_sincos": ("vit", dict(VIT, img_size=48, patch_size=6, pool="avg", pos_embed="sincos",
                                           layer_scale=0.5), 3, 48),
    "vit_learned_2d": ("vit", dict(VIT, img_size=48, patch_size=4, pos_embed="learned_2d"), 1, 48),
    "vit_distilled": ("vit", dict(VIT, img_size=48, patch_size=8, distilled=True, layer_scale=0.1), 3, 48),
    "vit_relative": ("vit", dict(VIT, img_size=48, patch_size=4, pool="avg", fc_norm=True, layer_scale=0.1,
                                 pos_embed="relative"), 1, 48),
    "vit_grey": ("vit", dict(VIT, img_size=48, patch_size=4), 1, 48),
    "vit_rgb_sincos": ("vit", dict(VIT, img_size=48, patch_size=8, pos_embed="sincos"), 3, 48),
    "vit_grey_none": ("vit", dict(VIT, img_size=48, patch_size=6, pos_embed="none"), 1, 48),
    "hybrid_r50": ("vit_r50_b16", dict(VIT, img_size=32, depth=1), 1, 32),
    "hybrid_cifar": ("vit_hybrid_cifar", dict(VIT, img_size=32, width=8, layers=(1, 1)), 3, 32),
    "resnet18": ("resnet18", dict(num_classes=7), 1, 48),
    "resnet18_cifar": ("resnet18", dict(num_classes=7, stem="cifar"), 3, 32),
    "vt_resnet18": ("vt_resnet18", dict(num_classes=7, num_tokens=4, token_channels=32, channels=64), 1, 48),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """name -> checkpoint of each model in MODELS, made once."""
    d = tmp_path_factory.mktemp("ckpts")
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    for i, (key, (name, args, chans, size)) in enumerate(MODELS.items()):
        model = jitter(create_model(name, in_chans=chans, **args), (chans, size, size), seed=i)
        out[key] = write_checkpoint(d / f"{key}.pt", model, chans, size)
    torch.set_num_threads(threads)
    return out


def reference(ckpt_path: Path, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, vitlab's logits) of the checkpoint's model, rebuilt as vitlab eval does."""
    ckpt = checkpoint.load(ckpt_path)
    model = checkpoint.build_model(ckpt).eval()
    c, s = ckpt["dataset"]["in_chans"], ckpt["config"]["data"]["img_size"]
    x = torch.randn(batch, c, s, s, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x)
    assert y.shape == (batch, 7) and y.std() > 0.05  # real logits, not zeros
    return x, y


def max_diff(a, b) -> float:
    a, b = (t.detach() if isinstance(t, torch.Tensor) else torch.as_tensor(np.asarray(t)) for t in (a, b))
    return float((a - b).abs().max())


# --------------------------------------------------------------------------- timm

TIMM_TAKES = ["vit_avg_fcnorm_ls", "vit_cls_fcnorm_nopos", "vit_avg_notoken_sincos", "vit_learned_2d",
              "vit_distilled", "hybrid_r50", "resnet18"]


@pytest.mark.parametrize("key", TIMM_TAKES)
def test_timm_loads_the_export_and_gives_vitlabs_logits(ckpts, tmp_path, key):
    timm = pytest.importorskip("timm", reason="timm reads --to timm exports (pip install timm)")
    out = tmp_path / "timm"
    r = export(ckpts[key], "timm", out)
    assert r["files"] == ["config.json", "model.safetensors"] and sorted(os.listdir(out)) == r["files"]
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x, want = reference(ckpts[key])
    with torch.no_grad():
        got = model(x)
    assert max_diff(got, want) < TOL
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_classes"] == 7 and cfg["label_names"] == CLASSES
    assert model.pretrained_cfg["label_names"] == CLASSES
    data = timm.data.resolve_model_data_config(model)
    c, s = MODELS[key][2], MODELS[key][3]
    assert tuple(data["input_size"]) == (c, s, s)
    assert tuple(data["mean"]) == ((0.3,) if c == 1 else (0.49, 0.48, 0.45))
    assert data["crop_pct"] == 1.0 and data["interpolation"] == "bilinear"


def test_timm_model_args_hold_only_what_differs_from_the_architecture(ckpts, tmp_path):
    export(ckpts["vit_avg_fcnorm_ls"], "timm", tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["architecture"] == "vit_base_patch16_224"
    assert cfg["model_args"] == {"img_size": 48, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 2,
                                 "mlp_ratio": 1.5, "global_pool": "avg", "init_values": 0.1, "patch_size": 4}
    assert cfg["pretrained_cfg"]["input_size"] == [1, 48, 48] and cfg["pretrained_cfg"]["std"] == [0.35]
    export(ckpts["resnet18"], "timm", tmp_path / "r")
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["architecture"], cfg["model_args"]) == ("resnet18", {"in_chans": 1})


def test_timm_architecture_table_matches_timm():
    timm = pytest.importorskip("timm", reason="timm is a test dependency")
    for (patch, dim, depth, heads), arch in list(to_timm.VIT_ARCHS.items()) + list(to_timm.DEIT_ARCHS.items()):
        with torch.device("meta"):
            m = timm.create_model(arch)
        assert (m.patch_embed.patch_size, m.embed_dim, len(m.blocks), m.blocks[0].attn.num_heads,
                m.blocks[0].mlp.fc1.out_features, m.patch_embed.img_size) == \
            ((patch, patch), dim, depth, heads, 4 * dim, (224, 224)), arch
    for layers, (arch, (dim, depth, heads)) in to_timm.HYBRID_ARCHS.items():
        with torch.device("meta"):
            m = timm.create_model(arch)
        assert [len(s.blocks) for s in m.patch_embed.backbone.stages] == list(layers), arch
        assert (m.embed_dim, len(m.blocks), m.blocks[0].attn.num_heads) == (dim, depth, heads), arch


@pytest.mark.parametrize("timm_name, vitlab_name, timm_args, vitlab_args, chans", [
    ("vit_base_patch16_224", "vit", dict(img_size=48, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                         mlp_ratio=1.5, global_pool="avg", fc_norm=True, init_values=0.1),
     dict(VIT, img_size=48, patch_size=4, pool="avg", class_token=True, fc_norm=True, layer_scale=0.1), 1),
    ("deit_tiny_distilled_patch16_224", "vit", dict(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                                    num_heads=2, mlp_ratio=1.5),
     dict(VIT, img_size=32, patch_size=8, distilled=True), 3),
    ("resnet18", "resnet18", {}, dict(num_classes=7), 1),
])
def test_timm_to_vitlab_to_timm_gives_back_the_same_tensors(tmp_path, timm_name, vitlab_name, timm_args,
                                                            vitlab_args, chans):
    timm = pytest.importorskip("timm", reason="timm is a test dependency")
    source = jitter(timm.create_model(timm_name, num_classes=7, in_chans=chans, **timm_args), seed=5)
    want = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(want, tmp_path / "timm.safetensors")
    model = create_model(vitlab_name, in_chans=chans, **vitlab_args)
    load_pretrained(model, tmp_path / "timm.safetensors")
    size = vitlab_args.get("img_size", 48)
    export(write_checkpoint(tmp_path / "m.pt", model, chans, size), "timm", tmp_path / "out")
    got = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]


# --------------------------------------------------------------------------- Hugging Face

HF_TAKES = ["vit_grey", "vit_rgb_sincos", "vit_grey_none", "vit_learned_2d"]


@pytest.mark.parametrize("key", HF_TAKES)
def test_transformers_loads_the_export_and_gives_vitlabs_logits(ckpts, tmp_path, key):
    transformers = pytest.importorskip("transformers", reason="transformers reads --to hf exports")
    out = tmp_path / "hf"
    r = export(ckpts[key], "hf", out)
    assert r["files"] == ["config.json", "model.safetensors", "preprocessor_config.json"]
    model = transformers.ViTForImageClassification.from_pretrained(out).eval()
    x, want = reference(ckpts[key])
    with torch.no_grad():  # HF's processor makes every image RGB: a grey image is three equal channels
        got = model(pixel_values=x.expand(-1, 3, -1, -1)).logits
    assert max_diff(got, want) < TOL
    assert [model.config.id2label[i] for i in range(7)] == CLASSES and model.config.label2id["Käfer"] == 2
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == ([0.3] * 3 if MODELS[key][2] == 1 else [0.49, 0.48, 0.45])


def test_the_transformers_pipeline_gives_vitlab_predicts_probabilities(ckpts, tmp_path, capsys):
    transformers = pytest.importorskip("transformers", reason="transformers reads --to hf exports")
    export(ckpts["vit_grey"], "hf", tmp_path / "hf")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"g{i}.png")
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(paths[-1])  # grey, the model's size
    pipe = transformers.pipeline("image-classification", model=str(tmp_path / "hf"), top_k=7)
    assert cli.main(["predict", str(ckpts["vit_grey"]), *map(str, paths), "--top-k", "7", "--json"]) == 0
    mine = json.loads(capsys.readouterr().out)
    for p, r in zip(paths, mine):
        theirs = {d["label"]: d["score"] for d in pipe(str(p))}
        assert max(abs(theirs[t["class"]] - t["prob"]) for t in r["top"]) < TOL


def test_hf_to_vitlab_to_hf_gives_back_the_same_tensors(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is a test dependency")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=48, image_size=48, patch_size=4, num_labels=7,
                                    layer_norm_eps=1e-6)
    source = jitter(transformers.ViTForImageClassification(config), seed=7)
    source.save_pretrained(tmp_path / "src")
    want = load_file(tmp_path / "src" / "model.safetensors")
    model = create_model("vit", in_chans=3, **dict(VIT, img_size=48, patch_size=4))
    load_pretrained(model, tmp_path / "src")
    export(write_checkpoint(tmp_path / "m.pt", model, 3, 48), "hf", tmp_path / "out")
    got = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]


# --------------------------------------------------------------------------- ONNX and torch.export

GRAPH_TAKES = ["vit_relative", "hybrid_cifar", "resnet18_cifar", "vt_resnet18"]  # one of each family


@pytest.mark.parametrize("key", GRAPH_TAKES)
def test_onnx_runtime_gives_vitlabs_logits(ckpts, tmp_path, key):
    onnx = pytest.importorskip("onnx", reason="--to onnx needs onnx (pip install 'vitlab[export]')")
    pytest.importorskip("onnxscript", reason="--to onnx needs onnxscript (pip install 'vitlab[export]')")
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the exported model")
    out = tmp_path / "onnx"
    assert export(ckpts[key], "onnx", out)["files"] == ["model.onnx", "preprocess.json"]
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "pixel_values" and outp.name == "logits" and isinstance(inp.shape[0], str)  # dynamic batch
    for batch in (1, 3):  # exported at batch 2
        x, want = reference(ckpts[key], batch=batch)
        assert max_diff(session.run(None, {"pixel_values": x.numpy()})[0], want) < TOL
    pre = json.loads(session.get_modelmeta().custom_metadata_map["vitlab.preprocess"])
    assert pre == json.loads((out / "preprocess.json").read_text())
    c, s = MODELS[key][2], MODELS[key][3]
    assert pre["classes"] == CLASSES and pre["input_size"] == [c, s, s] and len(pre["mean"]) == c


@pytest.fixture(scope="module")
def pt2_exports(ckpts, tmp_path_factory):
    """key -> its --to pt2 folder, exported once for the tests below."""
    d, done = tmp_path_factory.mktemp("pt2"), {}

    def get(key: str) -> Path:
        if key not in done:
            assert export(ckpts[key], "pt2", d / key)["files"] == ["model.pt2", "preprocess.json"]
            done[key] = d / key
        return done[key]
    return get


@pytest.mark.parametrize("key", GRAPH_TAKES)
def test_torch_export_load_gives_vitlabs_logits(ckpts, pt2_exports, key):
    out = pt2_exports(key)
    extra = {"preprocess.json": ""}
    program = torch.export.load(out / "model.pt2", extra_files=extra)
    assert json.loads(extra["preprocess.json"])["classes"] == CLASSES
    for batch in (1, 3):
        x, want = reference(ckpts[key], batch=batch)
        with torch.no_grad():
            assert max_diff(program.module()(x), want) < TOL


def test_pt2_exports_load_without_vitlab(ckpts, pt2_exports, tmp_path):
    wants = {}
    for key in GRAPH_TAKES:  # one of each family
        x, wants[key] = reference(ckpts[key])
        torch.save(x, tmp_path / f"{key}.x.pt")
    code = ("import sys; sys.modules['vitlab'] = None  # any import of vitlab fails\n"
            "import torch\n"
            "for key, model in zip(sys.argv[1::2], sys.argv[2::2]):\n"
            "    with torch.no_grad():\n"
            "        y = torch.export.load(model).module()(torch.load(key + '.x.pt'))\n"
            "    torch.save(y, key + '.y.pt')\n")
    args = [a for key in GRAPH_TAKES for a in (key, str(pt2_exports(key) / "model.pt2"))]
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                       env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    for key, want in wants.items():
        assert max_diff(torch.load(tmp_path / f"{key}.y.pt"), want) < TOL, key


# --------------------------------------------------------------------------- the command and bad input


def test_the_command_exports_a_run_folders_best_or_last(ckpts, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(ckpts["vit_grey"].read_bytes())
    (run / "last.pt").write_bytes(ckpts["resnet18"].read_bytes())
    assert cli.main(["export", str(run), "--to", "pt2", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"exported {run / 'best.pt'} (vit, 7 classes, input 1x48x48) for pt2" in out
    assert 'torch.export.load("' in out
    assert cli.main(["export", str(run), "--to", "timm", "--out", str(tmp_path / "b"), "--checkpoint", "last"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "b" / "config.json").read_text())["architecture"] == "resnet18"
    assert "unknown --checkpoint 'lats' (did you mean 'last'?)" in fails(
        capsys, "export", run, "--to", "timm", "--out", tmp_path / "c", "--checkpoint", "lats")
    (run / "best.pt").unlink()
    assert f"{run} holds no best.pt" in fails(capsys, "export", run, "--to", "timm", "--out", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_an_unknown_format_is_refused(ckpts, tmp_path, capsys):
    err = fails(capsys, "export", ckpts["vit_grey"], "--to", "tflite", "--out", tmp_path / "o")
    assert err == "vitlab: error: unknown export format 'tflite'; choose timm, hf, onnx, pt2"
    assert "(did you mean 'onnx'?)" in fails(capsys, "export", ckpts["vit_grey"], "--to", "onx", "--out",
                                              tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_output_folder_that_holds_files_needs_force(ckpts, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("old")
    err = fails(capsys, "export", ckpts["resnet18"], "--to", "timm", "--out", out)
    assert f"the output folder {out} holds files (config.json, notes.txt)" in err and "--force" in err
    assert sorted(os.listdir(out)) == ["config.json", "notes.txt"] and (out / "config.json").read_text() == "old"
    assert cli.main(["export", str(ckpts["resnet18"]), "--to", "timm", "--out", str(out), "--force"]) == 0
    assert "exported" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "notes.txt"]  # no staging folder left
    assert json.loads((out / "config.json").read_text())["architecture"] == "resnet18"
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in fails(capsys, "export", ckpts["resnet18"], "--to", "pt2", "--out",
                                              tmp_path / "file")


@pytest.mark.parametrize("key, fmt, why, takers", [
    ("resnet18_cifar", "timm", "a CIFAR-stem ResNet (stem='cifar'", "--to onnx or --to pt2"),
    ("vt_resnet18", "timm", "a VT-ResNet", "--to onnx or --to pt2"),
    ("vit_relative", "timm", "a relative position bias", "--to onnx or --to pt2"),
    ("hybrid_cifar", "timm", "this hybrid's ResNet-v2 (stem='cifar'", "--to onnx or --to pt2"),
    ("vit_avg_fcnorm_ls", "hf", "fc_norm", "--to timm or --to onnx or --to pt2"),
    ("vit_distilled", "hf", "layer scale", "--to timm or --to onnx or --to pt2"),
    ("vit_avg_notoken_sincos", "hf", "layer scale", "--to timm or --to onnx or --to pt2"),
    ("hybrid_r50", "hf", "a hybrid's ResNet stem", "--to timm or --to onnx or --to pt2"),
    ("resnet18", "hf", "a ResNet", "--to timm or --to onnx or --to pt2"),
    ("vt_resnet18", "hf", "a VT-ResNet", "--to onnx or --to pt2"),
])
def test_a_model_the_format_cannot_represent_is_refused(ckpts, tmp_path, capsys, key, fmt, why, takers):
    err = fails(capsys, "export", ckpts[key], "--to", fmt, "--out", tmp_path / "o")
    assert why in err and err.endswith(f"; export it with {takers}"), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("options, why", [
    (dict(pool="avg"), "average pooling"), (dict(pool="avg", class_token=False), "average pooling"),
    (dict(distilled=True), "a distillation token"), (dict(representation_size=16), "a representation layer"),
    (dict(pos_embed="relative"), "a relative position bias"), (dict(layer_scale=0.1), "layer scale"),
])
def test_hf_refuses_what_vit_for_image_classification_lacks(tmp_path, capsys, options, why):
    model = create_model("vit", in_chans=3, **dict(VIT, img_size=32, patch_size=8), **options)
    err = fails(capsys, "export", write_checkpoint(tmp_path / "m.pt", model, 3, 32), "--to", "hf", "--out",
                tmp_path / "o")
    assert why in err
    assert not (tmp_path / "o").exists()


def test_timm_refuses_a_representation_layer(tmp_path, capsys):
    model = create_model("vit", in_chans=3, **dict(VIT, img_size=32, patch_size=8, representation_size=16))
    err = fails(capsys, "export", write_checkpoint(tmp_path / "m.pt", model, 3, 32), "--to", "timm", "--out",
                tmp_path / "o")
    assert "a representation layer" in err and err.endswith("--to onnx or --to pt2")


@pytest.mark.parametrize("gone", [["onnx"], ["onnxscript"], ["onnx", "onnxscript"]])
def test_onnx_without_its_packages_says_what_to_install(ckpts, tmp_path, capsys, monkeypatch, gone):
    for name in gone:
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    err = fails(capsys, "export", ckpts["vit_grey"], "--to", "onnx", "--out", tmp_path / "o")
    assert err == f"vitlab: error: --to onnx needs {' and '.join(gone)}: pip install 'vitlab[export]' " \
                  f"(or pip install {' '.join(gone)})"
    assert not (tmp_path / "o").exists()


def test_a_failure_while_writing_leaves_nothing(ckpts, tmp_path, capsys, monkeypatch):
    def half_then_fail(src, folder):
        (folder / "model.pt2").write_bytes(b"half")
        raise cli.UserError("cannot write model.pt2: the disk is full")

    monkeypatch.setattr(graph, "write_pt2", half_then_fail)
    assert "the disk is full" in fails(capsys, "export", ckpts["vit_grey"], "--to", "pt2", "--out",
                                       tmp_path / "new" / "o")
    assert not (tmp_path / "new").exists()  # the folders it made are gone too
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "a.txt").write_text("a")
    fails(capsys, "export", ckpts["vit_grey"], "--to", "pt2", "--out", kept, "--force")
    assert os.listdir(kept) == ["a.txt"]


def test_formats_are_the_documented_four():
    assert FORMATS == ("timm", "hf", "onnx", "pt2")
