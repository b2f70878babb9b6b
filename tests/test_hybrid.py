"""The hybrid ViT (vitlab.models.hybrid): R50+ViT-B/16 has timm's parameters
and names and gives timm's logits on timm's weights and on a Google-layout
.npz read by timm's own loader; position embeddings resample; the CIFAR
hybrid's grid; hybrid weights in a plain ViT are explained; grey models.

Reference: timm's ``vit_base_r50_s16_224`` with random weights (timm's init,
then noise on every tensor; no downloads), built at 64 px (a 4x4 grid) to keep
the CPU time low: once at full depth, once with 2 Transformer blocks for the
tests whose point is the backbone or the loaders. Models that only receive
weights are built on the meta device and given uninitialised memory
(``_empty``): loading must overwrite every tensor, and a tensor left out puts
garbage into the logits.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vitlab
from vitlab.errors import UserError
from vitlab.flops import count_flops
from vitlab.models.hybrid import pad_same, same_padding, vit_hybrid

# test_weights' helpers: noise on every tensor, and its Google-layout .npz writer for the ViT part
from test_weights import _jitter, _to_npz

TOL = 1e-4
R50_B16_PARAMS = 98_659_112  # timm vit_base_r50_s16_224 with 1000 classes
HYBRID_CIFAR_PARAMS = 6_552_362
SIZE = 64  # build-time size of the timm reference: grid 4x4


def _timm():
    return pytest.importorskip("timm", reason="timm is not installed (pip install -e '.[dev]')")


def _empty(build) -> torch.nn.Module:
    """``build()`` on the meta device, then uninitialised CPU memory: a model that only receives weights."""
    with torch.device("meta"):
        model = build()
    return model.to_empty(device="cpu").eval()


def _r50(**kw) -> torch.nn.Module:
    return vitlab.create_model("vit_r50_b16", **kw).eval()


def _timm_r50(**kw) -> torch.nn.Module:
    return _timm().create_model("vit_base_r50_s16_224", pretrained=False, num_classes=1000, **kw).eval()


def _image(size, batch: int = 2, chans: int = 3, seed: int = 1) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, chans, h, w, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def ref():
    """timm's R50+ViT-B/16 at 64 px, random weights."""
    return _jitter(_timm_r50(img_size=SIZE))


@pytest.fixture(scope="module")
def sd(ref):
    return ref.state_dict()


@pytest.fixture(scope="module")
def ref2():
    """The same with 2 Transformer blocks."""
    return _jitter(_timm_r50(img_size=SIZE, depth=2), seed=2)


@pytest.fixture(scope="module")
def x64():
    return _image(SIZE)


# ------------------------------------------------------------------------------------------------
# architecture
# ------------------------------------------------------------------------------------------------
def test_parameters_and_names_equal_timm():
    timm = _timm()
    with torch.device("meta"):  # shapes only
        ours = vitlab.create_model("vit_r50_b16")
        theirs = timm.create_model("vit_base_r50_s16_224", pretrained=False, num_classes=1000)
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in theirs.parameters()) == R50_B16_PARAMS
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert ours.grid_size() == (14, 14) and ours.patch_embed.num_patches == 196
    assert ours.first_conv == "patch_embed.backbone.stem.conv"
    # what the CLI does: count on the meta device. ResNet part 3.93 G + 1x1 projection 0.15 G
    # + the Transformer on 197 tokens 17.45 G (ViT-B/16's 17.56 G less its patch embedding)
    assert count_flops(ours.patch_embed.backbone, (3, 224, 224)) == 3_932_995_584
    assert count_flops(ours, (3, 224, 224)) == 21_535_358_976


def test_same_padding_is_tensorflows():
    pad_ref = pytest.importorskip("timm.layers.padding").pad_same
    assert same_padding(224, 7, 2) == (2, 3)  # the odd pixel goes after
    assert same_padding(112, 3, 2) == (0, 1) and same_padding(113, 3, 2) == (1, 1)
    assert same_padding(57, 1, 2) == (0, 0)
    for size in range(1, 18):
        x = torch.randn(1, 1, size, size + 1)
        for k in (1, 3, 7):
            for s in (1, 2):
                assert torch.equal(pad_same(x, (k, k), (s, s), value=-1.0), pad_ref(x, (k, k), (s, s), value=-1.0))


def test_timm_logits_match(ref, sd, x64):
    model = vitlab.load_pretrained(_r50(img_size=SIZE), sd)  # the registered model, 12 blocks
    assert model.grid_size() == ref.patch_embed.grid_size == (4, 4)
    with torch.no_grad():
        assert _max_diff(model(x64), ref(x64)) < TOL


def test_backbone_matches_timm_at_other_sizes(ref2):
    """The backbone takes any size: 'SAME' padding computed at run time (odd and rectangular
    sizes: asymmetric padding, ceil(size / 2) per stride), and grid_for predicts the map."""
    model = vitlab.load_pretrained(_empty(lambda: _r50(img_size=SIZE, depth=2)), ref2.state_dict())
    for size in [(65, 50), (31, 97)]:
        x = _image(size, batch=1)
        with torch.no_grad():
            ours, theirs = model.patch_embed.backbone(x), ref2.patch_embed.backbone(x)
        assert ours.shape[-2:] == model.patch_embed.grid_for(*size)
        assert _max_diff(ours, theirs) < TOL
    assert model.patch_embed.grid_for(65, 50) == (5, 4) and model.patch_embed.grid_for(31, 97) == (2, 7)


# ------------------------------------------------------------------------------------------------
# Google .npz
# ------------------------------------------------------------------------------------------------
_RESNET_KEY = re.compile(r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.(conv|norm|downsample\.conv|"
                         r"downsample\.norm)(\d?)\.(weight|bias)$")


def _write_hybrid_npz(sd: dict, heads: int, path) -> None:
    """timm state dict -> Google R50+ViT .npz: the ViT part by test_weights' writer, the ResNet
    (conv_root, gn_root, block{i+1}/unit{j+1}/...) here; kernels HWIO."""
    _to_npz(sd, heads, path)
    with np.load(path) as f:
        out = dict(f)
    a = {k: v.detach().numpy() for k, v in sd.items()}
    bb = "patch_embed.backbone."
    out["conv_root/kernel"] = a[bb + "stem.conv.weight"].transpose(2, 3, 1, 0)
    # the (1, 1, 1, C) form of BiT files for the stem's norm, (C,) elsewhere: both are read
    out["gn_root/scale"] = a[bb + "stem.norm.weight"].reshape(1, 1, 1, -1)
    out["gn_root/bias"] = a[bb + "stem.norm.bias"].reshape(1, 1, 1, -1)
    n = 0
    for k, v in a.items():
        m = _RESNET_KEY.match(k)
        if not m:
            continue
        i, j, kind, r, what = m.groups()
        unit = f"block{int(i) + 1}/unit{int(j) + 1}/"
        if kind.endswith("conv"):
            name = f"conv{r}/kernel" if kind == "conv" else "conv_proj/kernel"
            v = v.transpose(2, 3, 1, 0)
        else:
            name = (f"gn{r}/" if kind == "norm" else "gn_proj/") + ("scale" if what == "weight" else "bias")
        out[unit + name] = v
        n += 1
    assert n + 3 == sum(k.startswith(bb) for k in a)  # every backbone tensor written
    np.savez(path, **{k: np.ascontiguousarray(v) for k, v in out.items()})


@pytest.fixture(scope="module")
def npz_path(ref2, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "R50+ViT-B_16.npz"
    _write_hybrid_npz(ref2.state_dict(), 12, path)
    return path


def test_npz_logits_match_timm_loader(ref2, npz_path, x64):
    with np.load(npz_path) as f:
        assert {"conv_root/kernel", "block3/unit9/conv3/kernel", "block1/unit1/gn_proj/scale"} <= set(f.files)
        assert "block1/unit2/conv_proj/kernel" not in f.files
    theirs = _empty(lambda: _timm_r50(img_size=SIZE, depth=2))
    theirs.load_pretrained(str(npz_path))  # timm's own Google .npz loader
    ours = vitlab.load_pretrained(_empty(lambda: _r50(img_size=SIZE, depth=2)), npz_path)
    with torch.no_grad():
        logits = ours(x64)
        assert _max_diff(logits, theirs(x64)) < TOL
        assert _max_diff(logits, ref2(x64)) < TOL  # and the writer above is the inverse of the map


def test_hybrid_weights_into_plain_vit_are_explained(sd, npz_path):
    for source in (sd, npz_path):
        with pytest.raises(UserError) as e:
            vitlab.load_pretrained(_empty(lambda: vitlab.create_model("vit_b16")), source)
        msg = str(e.value)
        assert "ResNet stem" in msg and "vit_r50_b16" in msg and "\n" not in msg, msg


# ------------------------------------------------------------------------------------------------
# fine-tuning rules
# ------------------------------------------------------------------------------------------------
def test_pos_embed_resampled_to_224(ref2, caplog):
    """64 px weights (4x4 grid) in the registered 224 px model (14x14): the position
    embeddings resample as timm's, and the logits at 224 are those of timm's model
    given the same weights by its own checkpoint filter."""
    _timm()
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer_hybrid import checkpoint_filter_fn
    sd = ref2.state_dict()
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        model = vitlab.load_pretrained(_empty(lambda: _r50(depth=2)), sd)
    assert "resampled from grid 4x4 to 14x14" in caplog.text
    assert model.grid_size() == (14, 14) and model.pos_embed.shape == (1, 197, 768)
    expect = resample_abs_pos_embed(sd["pos_embed"], new_size=[14, 14], num_prefix_tokens=1)
    assert _max_diff(model.pos_embed, expect) < 1e-5

    ref224 = _empty(lambda: _timm_r50(depth=2))
    ref224.load_state_dict(checkpoint_filter_fn(dict(sd), ref224))
    x = _image(224, batch=1)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, 197, 768)
        assert _max_diff(model.forward_head(feats), ref224(x)) < TOL


def test_grey_model_loads_rgb_weights(sd, caplog):
    """The stem conv's filters are summed over RGB. With weight standardisation the
    1-channel filter is standardised again, which scales each output channel of the
    stem by its own factor; the GroupNorm after it cancels that exactly only with one
    channel per group (a width-32 stem). So: exact logits for such a backbone, and the
    adaptation itself for R50 (64 channels in 32 groups)."""
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        grey = vitlab.load_pretrained(_empty(lambda: _r50(img_size=SIZE, in_chans=1)), sd)
    assert "from 3 to 1 input channels" in caplog.text
    stem = "patch_embed.backbone.stem.conv.weight"
    assert torch.equal(grey.state_dict()[stem], sd[stem].sum(1, keepdim=True))
    for k, v in grey.state_dict().items():
        if k != stem:
            assert torch.equal(v, sd[k]), k

    kw = dict(depth=1)
    rgb = _jitter(vitlab.create_model("vit_hybrid_cifar", **kw))
    assert rgb.patch_embed.backbone.stem.norm.num_groups == 32 == rgb.patch_embed.backbone.stem.conv.out_channels
    grey = vitlab.load_pretrained(_empty(lambda: vitlab.create_model("vit_hybrid_cifar", in_chans=1, **kw)),
                                  rgb.state_dict())
    x = _image(32, chans=1)
    with torch.no_grad():
        assert _max_diff(grey(x), rgb(x.expand(-1, 3, -1, -1))) < TOL


# ------------------------------------------------------------------------------------------------
# the CIFAR hybrid and the model protocol
# ------------------------------------------------------------------------------------------------
def test_cifar_hybrid_grid_and_training_step():
    model = vitlab.create_model("vit_hybrid_cifar")
    assert sum(p.numel() for p in model.parameters()) == HYBRID_CIFAR_PARAMS
    assert model.grid_size() == (8, 8) and model.patch_embed.grid_for(32, 32) == (8, 8)
    assert model.patch_embed.backbone.num_features == 256  # stages of 128 and 256 channels (width 32)
    x, y = _image(32, batch=4), torch.tensor([0, 1, 2, 3])
    feats = model.forward_features(x)
    assert feats.shape == (4, 65, 384)
    torch.nn.init.normal_(model.head.weight, std=0.02)  # the zero head would stop the gradient
    loss = F.cross_entropy(model.forward_head(feats), y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.patch_embed.backbone.stem.conv.weight.grad.abs().sum() > 0
    with torch.device("meta"):  # the CLI counts parameters and MACs this way
        meta = vitlab.create_model("vit_hybrid_cifar")
    assert sum(p.numel() for p in meta.parameters()) == HYBRID_CIFAR_PARAMS
    assert count_flops(meta, (3, 32, 32)) > 0


def test_model_protocol():
    model = vitlab.create_model("vit_hybrid_cifar", depth=2).eval()
    x = _image(32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 65, 384)
        maps = model.attention_maps(x)
        assert len(maps) == 2 and maps[0].shape == (2, 12, 65, 65)
        assert torch.allclose(maps[0].sum(-1), torch.ones(2, 12, 65))
        bigger = _image(40, batch=1)  # another size: the grid follows, position embeddings resampled
        assert model.patch_embed.grid_for(40, 40) == (10, 10)
        assert model.forward_features(bigger).shape == (1, 101, 384)
    model.reset_classifier(5)
    assert model.head.out_features == 5 and torch.count_nonzero(model.head.weight) == 0
    assert torch.count_nonzero(model.head.bias) == 0
    with torch.no_grad():
        assert torch.equal(model(x), torch.zeros(2, 5))


def test_arguments_are_checked():
    small = dict(img_size=32, num_classes=10, stem="cifar", width=8, embed_dim=32, depth=1, num_heads=2,
                 mlp_dim=32)
    with pytest.raises(ValueError, match="stem"):
        vit_hybrid(**{**small, "stem": "deep"})
    with pytest.raises(ValueError, match="layers"):
        vit_hybrid(**small, layers=())
    with pytest.raises(ValueError, match="layers"):
        vit_hybrid(**small, layers=(2, 0))
    with pytest.raises(ValueError, match="width"):
        vit_hybrid(**{**small, "width": 0}, layers=(1,))
    # a list (from a YAML config) is a tuple; a width of 8 gives GroupNorms of 8 groups
    model = vitlab.create_model("vit_hybrid_cifar", layers=[1, 1], width=8, embed_dim=32, depth=1, num_heads=2,
                                mlp_dim=32)
    assert model.patch_embed.backbone.stem.norm.num_groups == 8
    assert model.patch_embed.backbone.stages[1].blocks[0].norm3.num_groups == 32  # 64 channels
    assert model.forward_features(_image(32, batch=1)).shape == (1, 65, 32)
