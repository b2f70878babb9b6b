"""vitlab.load_pretrained: every layout gives the reference implementation's
logits, position embeddings resample like timm's, the fine-tuning head rule,
and clear errors for bad files.

Reference models are built with random weights (no downloads): timm's
VisionTransformer, transformers' ViTForImageClassification / ViTModel, and
Google-layout .npz files written here and read by timm's own .npz loader.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import vitlab
from vitlab.errors import UserError
from vitlab.models.pos_embed import resample_grid
from vitlab.weights import load_pretrained

TOL = 1e-4


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _need(module: str):
    """Import a reference package or skip the test."""
    top = module.split(".")[0]
    return pytest.importorskip(module, reason=f"{top} is not installed (pip install -e '.[dev]')")


def _jitter(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random init leaves biases at 0 and norms at 1; perturb every tensor so
    that a wrongly mapped one shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _vit(**kw) -> torch.nn.Module:
    return vitlab.create_model("vit", **kw).eval()


def _timm_twin(kw: dict) -> torch.nn.Module:
    """timm VisionTransformer of the same architecture as vitlab ``vit(**kw)``."""
    timm_vit = _need("timm.models.vision_transformer")
    avg = kw.get("pool", "cls") == "avg"
    model = timm_vit.VisionTransformer(
        img_size=kw["img_size"], patch_size=kw["patch_size"], in_chans=kw.get("in_chans", 3),
        num_classes=kw["num_classes"], embed_dim=kw["embed_dim"], depth=kw["depth"],
        num_heads=kw["num_heads"], mlp_ratio=kw["mlp_dim"] / kw["embed_dim"],
        global_pool="avg" if avg else "token", class_token=not avg, fc_norm=False)
    return _jitter(model)


def _image(kw: dict, batch: int = 2, seed: int = 1) -> torch.Tensor:
    h, w = (kw["img_size"],) * 2 if isinstance(kw["img_size"], int) else kw["img_size"]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, kw.get("in_chans", 3), h, w, generator=g)


def _save(state: dict, path: Path) -> Path:
    state = {k: v.detach().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@torch.no_grad()
def _assert_same(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff < tol, f"max abs diff {diff:.3g}"


# ------------------------------------------------------------------------------------------------
# timm
# ------------------------------------------------------------------------------------------------
TIMM_CASES = {
    "p8-32px-cls": dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_dim=128,
                        num_classes=10),
    "p4-28px-grey": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=48, depth=2, num_heads=3,
                         mlp_dim=96, num_classes=10),
    "p16-rect-avg": dict(img_size=(64, 96), patch_size=16, embed_dim=96, depth=2, num_heads=6,
                         mlp_dim=192, num_classes=5, pool="avg"),
    "p8x16-rect-cls": dict(img_size=(48, 64), patch_size=(8, 16), embed_dim=64, depth=2, num_heads=2,
                           mlp_dim=256, num_classes=3),
}


@pytest.mark.parametrize("fmt", ["state_dict", ".pth", ".safetensors"])
@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_logits_match(case, fmt, tmp_path):
    kw = TIMM_CASES[case]
    ref = _timm_twin(kw)
    source = ref.state_dict() if fmt == "state_dict" else _save(ref.state_dict(), tmp_path / f"w{fmt}")
    model = load_pretrained(_vit(**kw), source)
    x = _image(kw)
    with torch.no_grad():
        _assert_same(model(x), ref(x))


def test_timm_registered_name_matches():
    timm = _need("timm")
    ref = _jitter(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2))
    model = load_pretrained(vitlab.create_model("vit_ti16", depth=2).eval(), ref.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _assert_same(model(x), ref(x))


def test_timm_training_checkpoint_is_unwrapped(tmp_path):
    kw = TIMM_CASES["p8-32px-cls"]
    ref = _timm_twin(kw)
    ddp = {f"module.{k}": v for k, v in ref.state_dict().items()}
    path = tmp_path / "checkpoint.pth.tar.pth"
    torch.save({"epoch": 3, "arch": "vit", "state_dict": ddp}, path)
    model = load_pretrained(_vit(**kw), path)
    x = _image(kw)
    with torch.no_grad():
        _assert_same(model(x), ref(x))


def test_timm_fc_norm_is_explained():
    timm_vit = _need("timm.models.vision_transformer")
    ref = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4,
                                     num_classes=10, global_pool="avg", class_token=False)  # fc_norm on
    with pytest.raises(UserError, match="fc_norm"):
        load_pretrained(_vit(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4, mlp_dim=256,
                             num_classes=10, pool="avg"), ref.state_dict())


# ------------------------------------------------------------------------------------------------
# position-embedding resampling
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("new_size", [384, 160, (192, 320)], ids=["384", "160-down", "192x320"])
def test_resample_matches_timm(new_size):
    timm = _need("timm")
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import checkpoint_filter_fn
    sd = _jitter(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1)).state_dict()
    model = load_pretrained(vitlab.create_model("vit_ti16", depth=1, img_size=new_size).eval(), sd)
    grid = model.grid_size()
    expect = resample_abs_pos_embed(sd["pos_embed"], new_size=list(grid), num_prefix_tokens=1)
    _assert_same(model.pos_embed, expect)

    # and the whole model gives timm's logits at the new size
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=new_size).eval()
    ref.load_state_dict(checkpoint_filter_fn(dict(sd), ref))
    x = torch.randn(1, 3, grid[0] * 16, grid[1] * 16)
    with torch.no_grad():
        _assert_same(model(x), ref(x))


def test_cls_checkpoint_into_avg_model_drops_cls_entry(caplog):
    timm = _need("timm")
    from timm.layers import resample_abs_pos_embed
    sd = _jitter(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1)).state_dict()
    model = vitlab.create_model("vit_ti16", depth=1, img_size=384, pool="avg").eval()
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        load_pretrained(model, sd)
    expect = resample_abs_pos_embed(sd["pos_embed"], new_size=[24, 24], num_prefix_tokens=1)[:, 1:]
    _assert_same(model.pos_embed, expect)
    assert model.cls_token is None
    assert "class token dropped" in caplog.text and "resampled" in caplog.text


@pytest.mark.parametrize("version", ["0.2", "0.3"])
def test_vitlab_checkpoint_with_rectangular_grid(tmp_path, version):
    src = _jitter(_vit(img_size=(32, 64), patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64,
                       num_classes=4))
    path = tmp_path / "best.pt"
    # 0.2 checkpoints hold the ViT's arguments as model_config; 0.3 ones model_args and the grid
    meta = ({"model_config": src.model_args} if version == "0.2" else
            {"model_args": src.model_args, "grid_size": (4, 8)})
    torch.save({"model": src.state_dict(), "model_name": "vit", "epoch": 7, **meta}, path)

    same = load_pretrained(_vit(**src.model_args), path)
    for k, v in src.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k

    # 4x8 grid (known from the checkpoint's metadata only) resampled to 8x8
    bigger = load_pretrained(_vit(**{**src.model_args, "img_size": 64}), path)
    expect = resample_grid(src.pos_embed[:, 1:].detach(), (4, 8), (8, 8))
    _assert_same(bigger.pos_embed[:, 1:], expect)
    _assert_same(bigger.pos_embed[:, :1], src.pos_embed[:, :1])


# ------------------------------------------------------------------------------------------------
# head and representation layer
# ------------------------------------------------------------------------------------------------
def test_head_reset_when_class_count_differs(caplog):
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64)
    src = _jitter(_vit(num_classes=10, **kw))
    model = _vit(num_classes=5, **kw)
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        load_pretrained(model, src.state_dict())
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    assert "10 classes" in caplog.text
    for k, v in src.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(model.state_dict()[k], v), k

    same = load_pretrained(_vit(num_classes=10, **kw), src.state_dict())  # same classes: loaded
    assert torch.equal(same.head.weight, src.head.weight)


def test_rgb_weights_into_grey_and_other_channel_counts(caplog):
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10)
    src = _jitter(_vit(**kw))
    grey = _vit(in_chans=1, **kw)
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        load_pretrained(grey, src.state_dict())
    assert "from 3 to 1 input channels" in caplog.text
    # a grey image is an RGB image with equal channels: both models give the same logits
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(grey(x), src(x.expand(-1, 3, -1, -1)), atol=TOL)
    # more channels: the filters repeat cyclically, scaled by 3/4
    four = load_pretrained(_vit(in_chans=4, **kw), src.state_dict())
    w3, w4 = src.patch_embed.proj.weight, four.patch_embed.proj.weight
    assert torch.allclose(w4, torch.cat([w3, w3[:, :1]], dim=1) * 0.75)
    for k, v in src.state_dict().items():
        if k != "patch_embed.proj.weight":
            assert torch.equal(four.state_dict()[k], v), k


def test_representation_layer_dropped_with_head(caplog):
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10)
    src = _jitter(_vit(representation_size=32, **kw))
    model = _vit(**kw)
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        load_pretrained(model, src.state_dict())
    assert "pre_logits" in caplog.text
    assert torch.count_nonzero(model.head.weight) == 0

    kept = load_pretrained(_vit(representation_size=32, **kw), src.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _assert_same(kept(x), src(x))


# ------------------------------------------------------------------------------------------------
# the report: what loading changed
# ------------------------------------------------------------------------------------------------
REPORT_KW = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64)


def test_report_names_every_change_in_order(tmp_path):
    """A 4x4-grid, 10-class, RGB file into a 6x6-grid, 5-class, grey model that pools by averaging."""
    src = _jitter(_vit(img_size=32, num_classes=10, **REPORT_KW))
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    model, report = load_pretrained(_vit(img_size=48, num_classes=5, in_chans=1, pool="avg", **REPORT_KW), path,
                                    report=True)
    assert isinstance(model, torch.nn.Module) and model.num_classes == 5
    assert (report.source, report.layout, report.head_loaded) == (str(path), "timm/vitlab", False)
    assert report.changes == (
        "class token dropped: the model has none (pool='avg', class_token=False)",
        "position embeddings resampled from grid 4x4 to 6x6 (bicubic)",
        "position-embedding entries of the class token dropped: the model has no such token",
        "input convolution patch_embed.proj adapted from 3 to 1 input channels (summed over the colour channels)",
        "head replaced: 10 classes -> 5 classes, zero-initialised")
    assert report.loaded == len(model.state_dict()) - 2 and not report.missing and not report.unused
    assert str(report) == (f"pretrained weights: {path} (timm/vitlab layout, {report.loaded} tensors): "
                           + "; ".join(report.changes))


def test_report_of_a_load_that_changed_nothing_says_so():
    src = _jitter(_vit(img_size=32, num_classes=10, **REPORT_KW))
    model = _vit(img_size=32, num_classes=10, **REPORT_KW)
    assert load_pretrained(model, src.state_dict()) is model  # without report: the model, as before
    _, report = load_pretrained(model, src.state_dict(), report=True)
    assert report.changes == () and report.head_loaded and report.loaded == len(src.state_dict())
    assert str(report).endswith(f", {report.loaded} tensors): every tensor loaded as it is")


def test_report_lists_what_a_loose_load_left_out():
    src = _jitter(_vit(img_size=32, num_classes=10, representation_size=16, **REPORT_KW))
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("norm.")}
    _, report = load_pretrained(_vit(img_size=32, num_classes=10, **REPORT_KW), sd, strict=False, report=True)
    assert report.missing == ("norm.weight", "norm.bias") and not report.unused
    assert report.changes[:2] == (
        "representation layer (pre_logits) dropped: the model has none",
        "head replaced, zero-initialised: the checkpoint's head was trained on the dropped representation layer")
    assert "2 model tensors missing from the checkpoint (norm.weight, norm.bias)" in report.changes[-1]
    assert report.changes[-1].endswith("the missing ones keep the model's initial values")


# ------------------------------------------------------------------------------------------------
# Hugging Face transformers
# ------------------------------------------------------------------------------------------------
HF_KW = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_dim=128, num_classes=6)


def _hf_config(**extra):
    transformers = _need("transformers")
    return transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
        patch_size=8, num_channels=3, layer_norm_eps=1e-6, hidden_act="gelu", **extra)


@pytest.mark.parametrize("fmt", ["state_dict", "folder", ".bin"])
def test_hf_classifier_logits_match(fmt, tmp_path):
    transformers = _need("transformers")
    ref = _jitter(transformers.ViTForImageClassification(_hf_config(num_labels=6)))
    if fmt == "state_dict":
        source = ref.state_dict()  # in-memory names (they differ between transformers versions)
    else:
        ref.save_pretrained(tmp_path)  # the names of the files on the Hub
        source = tmp_path
        if fmt == ".bin":
            from safetensors.torch import load_file
            source = tmp_path / "pytorch_model.bin"
            torch.save(load_file(str(tmp_path / "model.safetensors")), source)
    model = load_pretrained(_vit(**HF_KW), source)
    x = _image(HF_KW)
    with torch.no_grad():
        _assert_same(model(x), ref(pixel_values=x).logits)


def test_hf_model_pooler_is_representation_layer():
    transformers = _need("transformers")
    ref = _jitter(transformers.ViTModel(_hf_config(), add_pooling_layer=True))
    assert not any(k.startswith("vit.") for k in ref.state_dict())
    model = load_pretrained(_vit(**{**HF_KW, "num_classes": 0}, representation_size=64), ref.state_dict())
    x = _image(HF_KW)
    with torch.no_grad():
        _assert_same(model(x), ref(pixel_values=x).pooler_output)


def test_hf_shape_mismatch_names_both_keys():
    transformers = _need("transformers")
    ref = transformers.ViTForImageClassification(_hf_config(num_labels=6))
    with pytest.raises(UserError, match=r"blocks\.0\.mlp\.fc1\.weight.*\(128, 64\).*\(96, 64\)"):
        load_pretrained(_vit(**{**HF_KW, "mlp_dim": 96}), ref.state_dict())


# ------------------------------------------------------------------------------------------------
# Google / big_vision .npz
# ------------------------------------------------------------------------------------------------
def _to_npz(sd: dict, heads: int, path: Path, flavour: str = "google", prefix: str = "",
            stacked: bool = False) -> Path:
    """Write a timm state dict in the Flax layout of google-research/vision_transformer
    ('google') or big_vision ('big_vision'; no class entry in pos_embedding)."""
    a = {k: v.detach().numpy() for k, v in sd.items()}
    d = a["patch_embed.proj.bias"].shape[0]
    mha, ln2, mlp = (1, 2, 3) if flavour == "google" else (0, 1, 0)
    out = {"embedding/kernel": a["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": a["patch_embed.proj.bias"],
           "Transformer/encoder_norm/scale": a["norm.weight"], "Transformer/encoder_norm/bias": a["norm.bias"],
           "head/kernel": a["head.weight"].T, "head/bias": a["head.bias"]}
    if "cls_token" in a:
        out["cls"] = a["cls_token"]
    pos = "Transformer/posembed_input/pos_embedding" if flavour == "google" else "pos_embedding"
    out[pos] = a["pos_embed"]
    if "pre_logits.fc.weight" in a:
        out["pre_logits/kernel"], out["pre_logits/bias"] = a["pre_logits.fc.weight"].T, a["pre_logits.fc.bias"]
    blocks = []
    depth = 1 + max(int(k.split(".")[1]) for k in a if k.startswith("blocks."))
    for i in range(depth):
        g = lambda n, i=i: a[f"blocks.{i}.{n}"]  # noqa: E731
        blk = {"LayerNorm_0/scale": g("norm1.weight"), "LayerNorm_0/bias": g("norm1.bias"),
               f"LayerNorm_{ln2}/scale": g("norm2.weight"), f"LayerNorm_{ln2}/bias": g("norm2.bias")}
        qw, qb = np.split(g("attn.qkv.weight"), 3), np.split(g("attn.qkv.bias"), 3)
        for n, w, b in zip(("query", "key", "value"), qw, qb):
            blk[f"MultiHeadDotProductAttention_{mha}/{n}/kernel"] = w.T.reshape(d, heads, -1)
            blk[f"MultiHeadDotProductAttention_{mha}/{n}/bias"] = b.reshape(heads, -1)
        blk[f"MultiHeadDotProductAttention_{mha}/out/kernel"] = g("attn.proj.weight").T.reshape(heads, -1, d)
        blk[f"MultiHeadDotProductAttention_{mha}/out/bias"] = g("attn.proj.bias")
        for j in (0, 1):
            blk[f"MlpBlock_{mlp}/Dense_{j}/kernel"] = g(f"mlp.fc{j + 1}.weight").T
            blk[f"MlpBlock_{mlp}/Dense_{j}/bias"] = g(f"mlp.fc{j + 1}.bias")
        blocks.append(blk)
    if stacked:
        out.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
    else:
        out.update({f"Transformer/encoderblock_{i}/{k}": v for i, b in enumerate(blocks) for k, v in b.items()})
    np.savez(path, **{prefix + k: np.ascontiguousarray(v) for k, v in out.items()})
    return path


NPZ_KW = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_dim=128, num_classes=10)


@pytest.mark.parametrize("flavour,prefix,stacked,pool", [
    ("google", "", False, "cls"),
    ("google", "opt/target/", False, "cls"),
    ("big_vision", "params/", False, "avg"),   # pool_type 'gap'
    ("big_vision", "params/", True, "cls"),    # pool_type 'tok', layers stacked (scan)
])
def test_npz_logits_match_timm_loader(flavour, prefix, stacked, pool, tmp_path):
    timm_vit = _need("timm.models.vision_transformer")
    kw = {**NPZ_KW, "pool": pool}
    # big_vision's class token gets no position embedding: timm's no_embed_class
    ref = timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2, num_classes=10,
        global_pool="avg" if pool == "avg" else "token", class_token=pool == "cls", fc_norm=False,
        no_embed_class=flavour == "big_vision")
    path = _to_npz(_jitter(ref).state_dict(), 4, tmp_path / "w.npz", flavour, prefix, stacked)

    ref2 = timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2, num_classes=10,
        global_pool="avg" if pool == "avg" else "token", class_token=pool == "cls", fc_norm=False,
        no_embed_class=flavour == "big_vision").eval()
    ref2.load_pretrained(str(path))  # timm's own .npz loader
    model = load_pretrained(_vit(**kw), path)
    x = _image(kw)
    with torch.no_grad():
        _assert_same(model(x), ref2(x))
        _assert_same(model(x), ref(x))


def test_npz_resampled_like_timm_loader(tmp_path):
    """timm's .npz loader resamples bilinearly (no antialias; the same when upsampling)."""
    timm_vit = _need("timm.models.vision_transformer")
    arch = dict(patch_size=8, embed_dim=64, depth=1, num_heads=4, mlp_ratio=2, num_classes=10)
    path = _to_npz(_jitter(timm_vit.VisionTransformer(img_size=32, **arch)).state_dict(), 4, tmp_path / "w.npz")
    ref = timm_vit.VisionTransformer(img_size=56, **arch).eval()
    ref.load_pretrained(str(path))
    model = load_pretrained(_vit(**{**NPZ_KW, "depth": 1, "img_size": 56}), path, interpolation="bilinear")
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        _assert_same(model(x), ref(x))


def test_npz_21k_style_representation_layer(tmp_path, caplog):
    src = _jitter(_vit(**NPZ_KW, representation_size=64))
    path = _to_npz(src.state_dict(), 4, tmp_path / "in21k.npz")
    kept = load_pretrained(_vit(**NPZ_KW, representation_size=64), path)
    x = _image(NPZ_KW)
    with torch.no_grad():
        _assert_same(kept(x), src(x))
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        tuned = load_pretrained(_vit(**{**NPZ_KW, "num_classes": 3}), path)
    assert torch.count_nonzero(tuned.head.weight) == 0
    assert "pre_logits" in caplog.text


def test_npz_bfloat16_arrays(tmp_path):
    """big_vision may store bfloat16 arrays as raw 2-byte values."""
    src = _jitter(_vit(**NPZ_KW))
    path = _to_npz(src.state_dict(), 4, tmp_path / "w.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    raw = {k: torch.from_numpy(v).bfloat16().view(torch.int16).numpy().view("V2") for k, v in arrays.items()}
    np.savez(tmp_path / "bf16.npz", **raw)
    model = load_pretrained(_vit(**NPZ_KW), tmp_path / "bf16.npz")
    _assert_same(model.head.weight, src.head.weight, tol=1e-2)


# ------------------------------------------------------------------------------------------------
# mismatches and bad files
# ------------------------------------------------------------------------------------------------
SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, num_classes=4)


def test_shape_mismatch_names_key():
    src = _vit(**SMALL).state_dict()
    with pytest.raises(UserError, match=r"patch_embed\.proj\.weight.*\(32, 3, 8, 8\).*\(32, 3, 16, 16\)"):
        load_pretrained(_vit(**{**SMALL, "patch_size": 16}), src)


def test_strict_reports_missing_and_unused(caplog):
    deeper = _jitter(_vit(**{**SMALL, "depth": 3})).state_dict()
    with pytest.raises(UserError, match="unused.*blocks.2"):
        load_pretrained(_vit(**SMALL), deeper)
    with pytest.raises(UserError, match="missing.*blocks.1"):
        load_pretrained(_vit(**SMALL), {k: v for k, v in deeper.items() if not k.startswith("blocks.1.")})
    with caplog.at_level(logging.WARNING, logger="vitlab.weights"):
        model = load_pretrained(_vit(**SMALL), deeper, strict=False)
    assert "unused" in caplog.text
    assert torch.equal(model.blocks[1].mlp.fc1.weight, deeper["blocks.1.mlp.fc1.weight"])


def test_sincos_model():
    src = _jitter(_vit(**SMALL, pos_embed="sincos"))
    model = load_pretrained(_vit(**SMALL, pos_embed="sincos"), src.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _assert_same(model(x), src(x))
    with pytest.raises(UserError, match="sin-cos"):
        load_pretrained(_vit(**SMALL, pos_embed="sincos"), _vit(**SMALL).state_dict())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz", ".bin"])
def test_corrupt_file_is_user_error(suffix, tmp_path):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00not really weights\xff" * 10)
    with pytest.raises(UserError, match="cannot read"):
        load_pretrained(_vit(**SMALL), path)


def test_truncated_file_is_user_error(tmp_path):
    path = _save(_vit(**SMALL).state_dict(), tmp_path / "w.pth")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot read"):
        load_pretrained(_vit(**SMALL), path)


def test_missing_unknown_and_bad_sources(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_pretrained(_vit(**SMALL), tmp_path / "nope.pth")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(UserError, match="unknown weights format"):
        load_pretrained(_vit(**SMALL), tmp_path / "w.h5")
    with pytest.raises(UserError, match="unknown weights layout"):
        load_pretrained(_vit(**SMALL), {"layer1.conv.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="not a tensor"):
        load_pretrained(_vit(**SMALL), {"cls_token": "hello"})
    with pytest.raises(UserError, match="folder"):
        load_pretrained(_vit(**SMALL), tmp_path)


class _Payload:
    """Pickles to a call that creates a file: loading must never run it."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _vit(**SMALL).state_dict(), "extra": _Payload(marker)}, path)
    with pytest.raises(UserError, match="pickled"):
        load_pretrained(_vit(**SMALL), path)
    assert not marker.exists()


def test_any_model_in_its_own_names(tmp_path):
    src = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 2))
    _jitter(src)
    path = tmp_path / "last.pt"
    torch.save({"model": src.state_dict(), "model_name": "toy", "epoch": 1}, path)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2))
    load_pretrained(model, path)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5))
    with pytest.raises(UserError, match=r"3\.weight.*\(2, 144\).*\(5, 144\)"):
        load_pretrained(other, path)


def test_top_level_api_and_returns_model():
    model = _vit(**SMALL)
    assert vitlab.load_pretrained(model, _vit(**SMALL).state_dict()) is model
