"""vitlab.analysis: attention rollout, mean attention distance, position embedding similarity,
patch filter components, and their plots. Constructed attention (a stub model) checks the
numbers against values worked out here; tiny real models check shapes and the model paths."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math

import pytest
import torch

import vitlab
from vitlab.analysis import (NotAnalysable, attention_rollout, mean_attention_distance, patch_filter_components,
                             plot_attention_distance, plot_filter_components, plot_pos_embed_similarity,
                             plot_rollout, pos_embed_similarity)
from vitlab.analysis.rollout import discard_lowest, rollout
from vitlab.errors import UserError
from vitlab.models.pos_embed import POS_EMBEDS


# ------------------------------------------------------------------------------------------------
# a stub model: given attention, looked up per image
# ------------------------------------------------------------------------------------------------
class Stub:
    """Provides what the analyses use of a ViT. ``maps``: one (images, heads, N, N) tensor per
    layer; an input image says which of them it is by the value of its pixel (0, 0, 0), so a
    batch gets each image's own maps whatever its position."""

    def __init__(self, maps, grid, prefix=1):
        self.maps, self.grid, self.num_prefix_tokens = maps, grid, prefix

    def attention_maps(self, x):
        idx = x[:, 0, 0, 0].long()
        return [m[idx] for m in self.maps]

    def grid_size(self):
        return self.grid


def inputs(indices, hw):
    x = torch.zeros(len(indices), 3, *hw)
    x[:, 0, 0, 0] = torch.tensor(indices, dtype=torch.float32)
    return x


def patch_rows(n, prefix, patch_part, cls_mass=0.0):
    """(prefix + n, prefix + n) attention whose patch rows put ``cls_mass`` on the class token and
    the rest as ``patch_part`` (n, n, rows summing to 1); the class token's row is uniform."""
    a = torch.full((prefix + n, prefix + n), 1.0 / (prefix + n))
    a[prefix:, prefix:] = (1 - cls_mass) * patch_part if prefix else patch_part
    if prefix:
        a[prefix:, 0] = cls_mass
    return a


def mean_pairwise(grid, patch_px):
    """Mean pixel distance over all ordered pairs of patches (a patch with itself included)."""
    pos = [(r * patch_px[0], c * patch_px[1]) for r, c in itertools.product(range(grid[0]), range(grid[1]))]
    return sum(math.dist(p, q) for p, q in itertools.product(pos, pos)) / len(pos) ** 2


def random_maps(layers, images, heads, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(images, heads, n, n, generator=g).mul(3).softmax(-1) for _ in range(layers)]


# ------------------------------------------------------------------------------------------------
# mean attention distance
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", [1, 0])
def test_mean_distance_local_zero_uniform_mean_pairwise(prefix):
    grid, hw = (2, 3), (16, 36)  # patches of 8 x 12 px: rows and columns scale differently
    n = grid[0] * grid[1]
    local = patch_rows(n, prefix, torch.eye(n), cls_mass=0.3)
    uniform = patch_rows(n, prefix, torch.full((n, n), 1.0 / n), cls_mass=0.5)
    # image 0: layer 1 head 1 local, head 2 uniform; layer 2 the other way round. image 1: all uniform
    layer1 = torch.stack([torch.stack([local, uniform]), torch.stack([uniform, uniform])])
    layer2 = torch.stack([torch.stack([uniform, local]), torch.stack([uniform, uniform])])
    stub = Stub([layer1, layer2], grid, prefix)
    expected = mean_pairwise(grid, (8, 12))

    alone = mean_attention_distance(stub, inputs([0], hw))
    assert alone.shape == (2, 2)
    # the class token's half of the mass is renormalised away: the uniform head gives the full mean
    torch.testing.assert_close(alone, torch.tensor([[0.0, expected], [expected, 0.0]]))
    both = mean_attention_distance(stub, inputs([0, 1], hw), batch_size=1)  # averaged over the images
    torch.testing.assert_close(both, torch.tensor([[expected / 2, expected], [expected, expected / 2]]))


# ------------------------------------------------------------------------------------------------
# rollout
# ------------------------------------------------------------------------------------------------
def test_rollout_of_identity_attention_is_identity():
    n = 1 + 4
    eye = torch.eye(n).expand(2, 3, n, n)
    torch.testing.assert_close(rollout([eye, eye, eye]), torch.eye(n).expand(2, n, n))
    # the class token keeps all its mass on itself: no patch contributes (zeros, not NaN) ...
    maps = attention_rollout(Stub([eye], (2, 2), prefix=1), inputs([0, 1], (16, 16)))
    assert torch.equal(maps, torch.zeros(2, 2, 2))
    # ... while the mean of the rows (pool='avg') draws on every patch equally
    eye4 = torch.eye(4).expand(2, 3, 4, 4)
    maps = attention_rollout(Stub([eye4], (2, 2), prefix=0), inputs([0, 1], (16, 16)))
    torch.testing.assert_close(maps, torch.ones(2, 2, 2))


def test_rollout_follows_class_token_through_the_layers():
    # the class token attends only to patch 2 (of 4), the patches only to themselves: with the
    # residual, each layer moves half of the class token's remaining self-mass to patch 2
    n, layers = 5, 3
    a = torch.eye(n)
    a[0] = 0.0
    a[0, 3] = 1.0
    r = rollout([a.expand(1, 2, n, n)] * layers)
    expected_row = torch.zeros(n)
    expected_row[0], expected_row[3] = 0.5 ** layers, 1 - 0.5 ** layers
    torch.testing.assert_close(r[0, 0], expected_row)
    maps = attention_rollout(Stub([a.expand(1, 2, n, n)] * layers, (2, 2)), inputs([0], (16, 16)))
    assert torch.equal(maps, torch.tensor([[[0.0, 0.0], [1.0, 0.0]]]))  # patch 2: row 1, column 0


def test_rollout_multiplies_later_layers_from_the_left():
    maps = random_maps(3, 2, 2, 5)
    eye = torch.eye(5)
    step = [(0.5 * m.mean(1) + 0.5 * eye) / (0.5 * m.mean(1) + 0.5 * eye).sum(-1, keepdim=True) for m in maps]
    expected = functools.reduce(torch.matmul, reversed(step))  # A_3 A_2 A_1
    torch.testing.assert_close(rollout(maps), expected)
    assert not torch.allclose(rollout(maps), functools.reduce(torch.matmul, step))  # the order matters here


def test_head_fusion_mean_max_min():
    # one layer, two heads; the class token's row over (cls, p0, p1, p2, p3)
    n = 5
    attn = torch.eye(n).repeat(1, 2, 1, 1)
    attn[0, 0, 0] = torch.tensor([0.0, 0.6, 0.4, 0.0, 0.0])
    attn[0, 1, 0] = torch.tensor([0.0, 0.2, 0.2, 0.6, 0.0])
    stub = Stub([attn], (2, 2))
    x = inputs([0], (16, 16))
    # one layer: the map is the fused row over the patches, scaled to maximum 1
    expected = {"mean": [1.0, 0.75, 0.75, 0.0], "max": [1.0, 2 / 3, 1.0, 0.0], "min": [1.0, 1.0, 0.0, 0.0]}
    for how, row in expected.items():
        got = attention_rollout(stub, x, head_fusion=how)
        torch.testing.assert_close(got, torch.tensor(row).reshape(1, 2, 2), msg=how)
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(stub, x, head_fusion="median")


def test_discard_lowest_is_per_image_and_keeps_class_self_attention():
    n = 5
    w = torch.rand(2, n, n, generator=torch.Generator().manual_seed(1)) + 0.1
    w[:, 0, 0] = 0.01  # the smallest entry of both images; otherwise the two differ
    out = discard_lowest(w, 0.3)
    k = int(0.3 * (n * n - 1))
    for b in range(2):
        assert out[b, 0, 0] == w[b, 0, 0]  # kept although it is the lowest
        rest = w[b].flatten()[1:]
        gone = (out[b].flatten()[1:] == 0)
        assert gone.sum() == k
        assert torch.equal(gone, rest <= rest.sort().values[k - 1])  # exactly this image's k lowest
    assert torch.equal(discard_lowest(w, 0.0), w)
    with pytest.raises(ValueError, match="discard_ratio"):
        discard_lowest(w, 1.0)


@pytest.mark.parametrize("discard_ratio,head_fusion", [(0.0, "mean"), (0.4, "mean"), (0.6, "max")])
def test_rollout_of_a_batch_is_rollout_of_each_image(discard_ratio, head_fusion):
    stub = Stub(random_maps(3, 4, 3, 1 + 6), (2, 3))
    x = inputs([0, 1, 2, 3], (16, 24))
    batch = attention_rollout(stub, x, head_fusion=head_fusion, discard_ratio=discard_ratio)
    alone = torch.cat([attention_rollout(stub, x[i:i + 1], head_fusion=head_fusion, discard_ratio=discard_ratio)
                       for i in range(4)])
    assert batch.shape == (4, 2, 3)
    assert torch.equal(batch, alone)
    assert torch.equal(batch.amax(dim=(1, 2)), torch.ones(4))
    if discard_ratio:  # the discard acts on every image, not on the first only
        plain = attention_rollout(stub, x, head_fusion=head_fusion)
        assert all(not torch.allclose(batch[i], plain[i]) for i in range(4))


# ------------------------------------------------------------------------------------------------
# real tiny models
# ------------------------------------------------------------------------------------------------
def tiny_vit(pool="cls", pos_embed="learned", **kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_dim=96, num_classes=5)
    return vitlab.create_model("vit", pool=pool, pos_embed=pos_embed, **(args | kw)).eval()


@pytest.fixture(scope="module")
def hybrid():
    torch.manual_seed(0)
    return vitlab.create_model("vit_hybrid_cifar", depth=1).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def manual_attention(model, x):
    """softmax(Q K^T / sqrt(d)) of every block from its weights, the blocks run by their own
    (fused) forward."""
    out, tokens = [], model.embed(x)
    for blk in model.blocks:
        b, n, d = tokens.shape
        heads = blk.attn.num_heads
        q, k, _ = blk.attn.qkv(blk.norm1(tokens)).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-2, -1) / math.sqrt(d // heads)
        bias = blk.attn.relative_bias()  # pos_embed='relative': (heads, N, N) on the logits; else None
        out.append((logits if bias is None else logits + bias).softmax(-1))
        tokens = blk(tokens)
    return out


def expected_rollout(maps, prefix, grid):
    eye = torch.eye(maps[0].shape[-1])
    steps = [0.5 * m.mean(1) + 0.5 * eye for m in maps]
    r = functools.reduce(torch.matmul, reversed([s / s.sum(-1, keepdim=True) for s in steps]))
    row = r[:, 0, prefix:] if prefix else r.mean(1)
    return (row / row.amax(-1, keepdim=True)).reshape(-1, *grid)


@pytest.mark.parametrize("pool,pos_embed", [(pool, pe) for pe in POS_EMBEDS for pool in ("cls", "avg")]
                         + [("cls", "hybrid")])
def test_real_models(pool, pos_embed, hybrid, images):
    model = hybrid if pos_embed == "hybrid" else tiny_vit(pool, pos_embed)
    grid, heads, depth = ((8, 8), 12, 1) if model is hybrid else ((4, 4), 3, 2)
    prefix = 1 if pool == "cls" else 0
    maps = model.attention_maps(images)
    assert len(maps) == depth
    with torch.no_grad():
        manual = manual_attention(model, images)
    for got, want in zip(maps, manual):  # the analysis path agrees with the weights and the fused path
        assert got.shape == (3, heads, prefix + grid[0] * grid[1], prefix + grid[0] * grid[1])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

    r = attention_rollout(model, images)
    assert r.shape == (3, *grid)
    torch.testing.assert_close(r, expected_rollout(maps, prefix, grid))
    torch.testing.assert_close(attention_rollout(model, images[1:2]), r[1:2])
    dist = mean_attention_distance(model, images)
    assert dist.shape == (depth, heads)
    patch = 32 / grid[0]  # 8 px for the ViT, the CNN's stride 4 for the hybrid
    assert ((dist > 0) & (dist <= math.dist((0, 0), (patch * (grid[0] - 1),) * 2))).all()
    if pos_embed in ("none", "relative"):  # no per-patch embedding to compare
        with pytest.raises(NotAnalysable, match=f"pos_embed='{pos_embed}' has no"):
            pos_embed_similarity(model)
    else:
        assert pos_embed_similarity(model).shape == (grid[0] * grid[1],) * 2
    if model is not hybrid:
        assert patch_filter_components(model).shape == (28, 3, 8, 8)


def test_analyses_run_in_eval_mode_and_restore_the_mode(images):
    model = tiny_vit(dropout=0.5, attn_dropout=0.5).train()
    first = attention_rollout(model, images)
    assert model.training
    assert torch.equal(attention_rollout(model, images), first)
    assert torch.equal(mean_attention_distance(model, images), mean_attention_distance(model.eval(), images))


def test_pos_embed_similarity():
    learned = tiny_vit("cls", "learned")
    sim = pos_embed_similarity(learned)
    assert sim.shape == (16, 16)  # the class token's entry is left out
    torch.testing.assert_close(sim.diagonal(), torch.ones(16))
    torch.testing.assert_close(sim, sim.T)
    e = learned.pos_embed[0, 1:].detach()
    torch.testing.assert_close(sim, torch.nn.functional.cosine_similarity(e[:, None], e[None], dim=-1))

    sim = pos_embed_similarity(tiny_vit("avg", "sincos"))
    torch.testing.assert_close(sim.diagonal(), torch.ones(16))
    torch.testing.assert_close(sim, sim.T)
    # a sin-cos table depends on the offset between two patches only: (0,0)-(1,1) as (2,2)-(3,3)
    torch.testing.assert_close(sim[0, 5], sim[10, 15])
    torch.testing.assert_close(sim[1, 4], sim[11, 14])
    assert sim[0, 1] > sim[0, 3]  # and falls off with distance


def test_filter_components_orthonormal_centred_and_ordered():
    model = tiny_vit()
    g = torch.Generator().manual_seed(3)
    d, size = 48, 3 * 8 * 8
    u = torch.randn(size, generator=g)
    u /= u.norm()
    mean_filter = 5 * torch.randn(size, generator=g)
    weight = mean_filter + torch.randn(d, 1, generator=g) * u + 0.01 * torch.randn(d, size, generator=g)
    with torch.no_grad():
        model.patch_embed.proj.weight.copy_(weight.reshape(d, 3, 8, 8))
    comps = patch_filter_components(model, k=10)
    assert comps.shape == (10, 3, 8, 8)
    flat = comps.flatten(1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(10), atol=1e-5, rtol=0)
    # the direction the filters vary along comes first; their common mean filter is centred away
    assert abs(float(flat[0] @ u)) > 0.999
    assert abs(float(flat[0] @ mean_filter / mean_filter.norm())) < 0.1
    with pytest.raises(ValueError, match="k must be"):
        patch_filter_components(model, k=48)


def test_hybrid_filters_are_refused(hybrid, tmp_path):
    for error in (ValueError, UserError):
        with pytest.raises(error, match="'vit_hybrid_cifar' is a hybrid"):
            patch_filter_components(hybrid)
    with pytest.raises(ValueError):
        plot_filter_components(hybrid, tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []


def test_cnn_is_refused_with_one_line(images, tmp_path):
    resnet = vitlab.create_model("resnet18", stem="cifar", num_classes=5)
    calls = [lambda: attention_rollout(resnet, images), lambda: mean_attention_distance(resnet, images),
             lambda: pos_embed_similarity(resnet), lambda: patch_filter_components(resnet),
             lambda: plot_rollout(resnet, images, tmp_path / "r.png"),
             lambda: plot_attention_distance(resnet, images, tmp_path / "d.png"),
             lambda: plot_pos_embed_similarity(resnet, tmp_path / "p.png"),
             lambda: plot_filter_components(resnet, tmp_path / "f.png")]
    for call in calls:
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert "'resnet18'" in msg and "Vision Transformer" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------
def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(b"\x89PNG\r\n\x1a\n")


def test_plots_write_png_and_numbers(images, tmp_path):
    model = tiny_vit()
    png, data = plot_rollout(model, images, tmp_path / "rollout.png", discard_ratio=0.2)
    assert is_png(png) and data == tmp_path / "rollout.json"
    saved = json.loads(data.read_text())
    torch.testing.assert_close(torch.tensor(saved["maps"]), attention_rollout(model, images, discard_ratio=0.2))

    png, data = plot_attention_distance(model, images, tmp_path / "distance.png")
    assert is_png(png) and data == tmp_path / "distance.csv"
    rows = list(csv.DictReader(data.open()))
    dist = mean_attention_distance(model, images)
    assert [(int(r["layer"]), int(r["head"])) for r in rows] == [(i, j) for i in (1, 2) for j in (1, 2, 3)]
    torch.testing.assert_close(torch.tensor([float(r["mean_distance_px"]) for r in rows]), dist.flatten())

    png, data = plot_pos_embed_similarity(model, tmp_path / "pos.png")
    assert is_png(png)
    saved = json.loads(data.read_text())
    assert saved["grid"] == [4, 4]
    torch.testing.assert_close(torch.tensor(saved["similarity"]), pos_embed_similarity(model))

    for name, m in (("rgb", model), ("grey", tiny_vit(in_chans=1))):
        png, data = plot_filter_components(m, tmp_path / f"filters_{name}.png", k=12)
        assert is_png(png)
        saved = json.loads(data.read_text())
        assert torch.tensor(saved["components"]).shape == (12, m.patch_embed.proj.in_channels, 8, 8)
        assert len(saved["explained_variance_ratio"]) == 12
    assert len(list(tmp_path.iterdir())) == 10  # no temporary file left behind

    with pytest.raises(UserError, match="png"):
        plot_pos_embed_similarity(model, tmp_path / "pos.jpg")
    with pytest.raises(UserError, match="does not exist"):
        plot_pos_embed_similarity(model, tmp_path / "missing" / "pos.png")
    assert len(list(tmp_path.iterdir())) == 10
