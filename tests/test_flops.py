"""vitlab.count_flops: multiply-accumulates of matmuls and convolutions,
attention's two matmuls included, batch 1 for a (C, H, W) shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitlab
from vitlab.flops import count_flops, format_macs


def vit_macs(img_size, patch_size, in_chans=3, num_classes=1000, embed_dim=768, depth=12, num_heads=12,
             mlp_dim=3072, pool="cls", representation_size=None, attention=True, **_) -> int:
    """Analytic MACs of one image through vitlab's ViT."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    n_patches = (h // ph) * (w // pw)
    n = n_patches + (pool == "cls")
    d, hd = embed_dim, embed_dim // num_heads
    patch = n_patches * d * in_chans * ph * pw
    block = (n * d * 3 * d                   # qkv
             + 2 * num_heads * n * n * hd * attention  # q @ k^T and attn @ v
             + n * d * d                     # output projection
             + 2 * n * d * mlp_dim)          # MLP
    feat = d
    rep = 0
    if representation_size:
        rep, feat = d * representation_size, representation_size
    return patch + depth * block + rep + feat * num_classes


def test_vit_b16_224_is_17_56_gmacs():
    with torch.device("meta"):  # shapes only: no 86M-parameter init, no compute
        model = vitlab.create_model("vit_b16")
    macs = count_flops(model, (3, 224, 224))
    assert abs(macs - 17.56e9) / 17.56e9 < 0.01, format_macs(macs)
    assert macs == vit_macs(**model.model_args)


@pytest.mark.parametrize("kw", [
    dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4, mlp_dim=128, num_classes=10),
    dict(img_size=(48, 64), patch_size=(8, 16), embed_dim=48, depth=3, num_heads=3, mlp_dim=96,
         num_classes=7, pool="avg"),
    dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1, num_heads=2, mlp_dim=64,
         num_classes=5, representation_size=16),
], ids=["cls", "rect-avg", "grey-rep"])
def test_small_vit_matches_formula(kw):
    model = vitlab.create_model("vit", **kw)
    h, w = (kw["img_size"],) * 2 if isinstance(kw["img_size"], int) else kw["img_size"]
    assert count_flops(model, (kw.get("in_chans", 3), h, w)) == vit_macs(**kw)


def test_batch_shape_scales_linearly():
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=4)
    model = vitlab.create_model("vit", **kw)
    assert count_flops(model, (4, 3, 32, 32)) == 4 * count_flops(model, (3, 32, 32))


class _SDPA(nn.Module):
    """Fused attention only: (B, heads, N, d) from a (B, C, H, W) input."""

    def forward(self, x):
        q = x.flatten(2).reshape(x.shape[0], 2, -1, 8)  # (B, 2 heads, N, 8)
        return F.scaled_dot_product_attention(q, q, q)


def test_fused_attention_is_counted():
    # 1 x 16 x 10 x 10 -> 2 heads, N = 100, d = 8: two matmuls of 2*100*100*8 MACs each
    assert count_flops(_SDPA(), (16, 10, 10)) == 2 * (2 * 100 * 100 * 8)


def test_attention_matmuls_in_vit_count():
    """At 257 tokens of width 64 attention is a large share: it must be in the count."""
    kw = dict(img_size=64, patch_size=4, embed_dim=64, depth=2, num_heads=4, mlp_dim=128, num_classes=10)
    n = 16 * 16 + 1
    attention = kw["depth"] * 2 * n * n * kw["embed_dim"]
    macs = count_flops(vitlab.create_model("vit", **kw), (3, 64, 64))
    assert macs - vit_macs(**kw, attention=False) == attention
    assert attention > 0.2 * macs


def test_mode_is_restored_and_bad_shape():
    model = vitlab.create_model("vit", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                mlp_dim=64, num_classes=4)
    model.train()
    count_flops(model, (3, 32, 32))
    assert model.training
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(model, (32, 32))


def test_resnet50_is_4_09_gmacs():
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")
    with torch.device("meta"):
        model = torchvision.models.resnet50()
    macs = count_flops(model, (3, 224, 224))
    assert abs(macs - 4.09e9) / 4.09e9 < 0.01, format_macs(macs)


def test_format_macs():
    assert format_macs(17_563_828_224) == "17.56 GMACs"
    assert format_macs(4_089_184_256) == "4.09 GMACs"
    assert format_macs(1.5e12) == "1.50 TMACs"
    assert format_macs(6_250_000) == "6.25 MMACs"
    assert format_macs(512) == "512 MACs"
