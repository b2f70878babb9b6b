"""Position embeddings, the paper's ablation (section 4.5, appendix D.4): every ``pos_embed``
option trains, is an option of the registry, stays out of weight decay, survives a checkpoint,
resamples to another resolution (checked against interpolation worked out by hand), and means
what it says: no position information for 'none', the documented layouts for 'learned_2d' and
'relative', and the same relative bias on the fused and the manual attention path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitlab
from vitlab.analysis import NotAnalysable, pos_embed_similarity
from vitlab.errors import UserError
from vitlab.models import model_options
from vitlab.models.pos_embed import POS_EMBEDS, resample_rel_table
from vitlab.train.optim import param_groups
from vitlab.weights import load_pretrained

ARGS = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_dim=96, num_classes=5)
POOLS = ("cls", "avg")
CASES = [(pe, pool) for pe in POS_EMBEDS for pool in POOLS]


def vit(pos_embed: str, pool: str = "cls", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitlab.create_model("vit", pos_embed=pos_embed, pool=pool, **(ARGS | kw)).eval()


@torch.no_grad()
def jitter(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every tensor (the head starts at zero, biases at zero, the relative tables
    small), so that a lost or misplaced tensor shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def position_params(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if "pos_embed" in n or "relative_position" in n}


EXPECTED_PARAMS = {  # with a class token; 'avg' drops the class token's entries
    "none": set(),
    "learned": {"pos_embed"},
    "learned_2d": {"pos_embed_x", "pos_embed_y", "pos_embed_cls"},
    "sincos": set(),
    "relative": {f"blocks.{i}.attn.relative_position_bias_{t}" for i in (0, 1) for t in ("table", "cls")},
}


def images(hw=(32, 32), batch=2, seed=1) -> torch.Tensor:
    return torch.randn(batch, 3, *hw, generator=torch.Generator().manual_seed(seed))


def checkpoint(model, path):
    """A checkpoint as the trainer writes it (the parts ``load_pretrained`` reads)."""
    torch.save({"model": model.state_dict(), "model_name": model.model_name, "model_args": model.model_args,
                "grid_size": tuple(model.grid_size())}, path)
    return path


def linear_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D linear interpolation with half-pixel centres
    (align_corners=False), edges held: output i samples input (i + .5) n_in / n_out - .5."""
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        lo = int(src)
        hi = min(lo + 1, n_in - 1)
        w[i, lo] += 1 - (src - lo)
        w[i, hi] += src - lo
    return w.float()


def shuffle_patches(x: torch.Tensor, patch: int, perm: torch.Tensor) -> torch.Tensor:
    """The image with its patches moved: patch perm[k] (raster order) goes to place k."""
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    t = x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)
    t = t[:, perm].reshape(b, gh, gw, c, patch, patch)
    return t.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------------
# every option: builds, trains, is a registry option, stays out of weight decay
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pos_embed,pool", CASES)
def test_forward_backward_and_gradients(pos_embed, pool):
    model = vit(pos_embed, pool).train()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # below a zero head every gradient is zero
    n = 16 + (pool == "cls")
    assert model.forward_features(images()).shape == (2, n, 48)
    out = model(images())
    assert out.shape == (2, 5)
    F.cross_entropy(out, torch.tensor([0, 3])).backward()
    expected = {k for k in EXPECTED_PARAMS[pos_embed] if pool == "cls" or not k.endswith("_cls")}
    assert position_params(model) == expected
    # with pool='cls' the output reads the class token's row of the last block only, so the last
    # block's patch-to-patch bias table cannot change it: no gradient, by construction
    dead = {"blocks.1.attn.relative_position_bias_table"} if pool == "cls" else set()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name in dead:
            assert p.grad.abs().sum() == 0, name
        else:
            assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_options_are_registry_options_and_checked():
    for name in ("vit", "vit_mnist", "vit_cifar", "vit_b16", "vit_hybrid_cifar"):
        assert "pos_embed" in model_options(name)
    with pytest.raises(ValueError, match="'learned_2d'.*'relative'"):
        vitlab.create_model("vit_mnist", pos_embed="rope")
    with pytest.raises(ValueError, match="even embed_dim"):
        vit("learned_2d", embed_dim=45, num_heads=3)


@pytest.mark.parametrize("pos_embed", POS_EMBEDS)
def test_position_parameters_are_not_decayed(pos_embed):
    model = vit(pos_embed)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.05)
    kept_out = {names[id(p)] for p in no_decay["params"]}
    assert EXPECTED_PARAMS[pos_embed] | {"cls_token"} <= kept_out
    # named in no_weight_decay(), by their parameter names (the model protocol)
    assert EXPECTED_PARAMS[pos_embed] <= model.no_weight_decay() <= set(names.values()) | {"pos_embed"}
    assert not position_params(model) & {names[id(p)] for p in decay["params"]}


def test_init_of_the_new_tables():
    for mode in ("jax", "timm"):
        m = vit("relative", img_size=128, depth=1, weight_init=mode)  # a 16x16 grid: 3 x 31 x 31 entries
        table = m.blocks[0].attn.relative_position_bias_table
        assert table.shape == (3, 31, 31) and abs(table.std().item() - 0.02) < 0.002
        assert m.blocks[0].attn.relative_position_bias_cls.abs().max() > 0
        m = vit("learned_2d", img_size=128, embed_dim=384, num_heads=6, depth=1, weight_init=mode)
        xy = torch.cat([m.pos_embed_x.flatten(), m.pos_embed_y.flatten()])
        assert m.pos_embed_x.shape == (1, 16, 192) and abs(xy.std().item() - 0.02) < 0.002


# ------------------------------------------------------------------------------------------------
# checkpoints and resampling
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pos_embed,pool", CASES)
def test_checkpoint_round_trip_gives_identical_logits(pos_embed, pool, tmp_path):
    src = jitter(vit(pos_embed, pool))
    path = checkpoint(src, tmp_path / "best.pt")
    ckpt = torch.load(path, weights_only=True)
    rebuilt = vitlab.create_model(ckpt["model_name"], **ckpt["model_args"]).eval()
    rebuilt.load_state_dict(ckpt["model"])
    loaded = load_pretrained(vitlab.create_model(src.model_name, **src.model_args).eval(), path)
    x = images()
    with torch.no_grad():
        want = src(x)
        assert torch.equal(rebuilt(x), want)
        assert torch.equal(loaded(x), want)


@pytest.mark.parametrize("pos_embed,pool", CASES)
@pytest.mark.parametrize("img_size", [48, (32, 64), 16], ids=["48", "32x64", "16-down"])
def test_resample_to_new_img_size_through_load_pretrained(pos_embed, pool, img_size, tmp_path):
    src = jitter(vit(pos_embed, pool))
    path = checkpoint(src, tmp_path / "best.pt")
    model = load_pretrained(vit(pos_embed, pool, img_size=img_size), path)
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    with torch.no_grad():
        out = model(images((h, w)))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        # the model built at 32 px, run at the new size, resamples the same way (bicubic)
        torch.testing.assert_close(src(images((h, w))), out, atol=1e-5, rtol=1e-5)


def test_learned_2d_resample_is_1d_interpolation_of_x_and_y():
    # a 2x2 grid to a 2x4 grid (img 16x32, patch 8), bilinear: X goes 2 -> 4 positions, Y stays
    src = jitter(vit("learned_2d", img_size=16, embed_dim=8, num_heads=2))
    model = load_pretrained(vit("learned_2d", img_size=(16, 32), embed_dim=8, num_heads=2), src.state_dict(),
                            interpolation="bilinear")
    x = src.pos_embed_x.detach()[0]  # (2, 4)
    w = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    torch.testing.assert_close(linear_weights(2, 4), w)
    torch.testing.assert_close(model.pos_embed_x[0], w @ x)
    assert torch.equal(model.pos_embed_y, src.pos_embed_y)
    assert torch.equal(model.pos_embed_cls, src.pos_embed_cls)
    # and a grid of another height: Y by the same rule, 2 -> 3 rows
    taller = load_pretrained(vit("learned_2d", img_size=(24, 16), embed_dim=8, num_heads=2), src.state_dict(),
                             interpolation="bilinear")
    torch.testing.assert_close(taller.pos_embed_y[0], linear_weights(2, 3) @ src.pos_embed_y.detach()[0])
    assert torch.equal(taller.pos_embed_x, src.pos_embed_x)


def test_learned_2d_layout_x_then_y():
    """Patch (row i, col j) gets concat(X[j], Y[i]); the class token its own vector."""
    m = jitter(vit("learned_2d", img_size=(16, 24)))  # a 2x3 grid
    gh, gw = m.grid_size()
    assert (gh, gw) == (2, 3) and m.pos_embed_x.shape == (1, 3, 24) and m.pos_embed_y.shape == (1, 2, 24)
    table = m.position_embeddings()
    assert table.shape == (1, 1 + 6, 48)
    assert torch.equal(table[0, 0], m.pos_embed_cls[0, 0])
    for i in range(gh):
        for j in range(gw):
            want = torch.cat([m.pos_embed_x[0, j], m.pos_embed_y[0, i]])
            assert torch.equal(table[0, 1 + i * gw + j], want), (i, j)
    # the analysis compares these assembled per-patch embeddings
    e = table[0, 1:].detach()
    torch.testing.assert_close(pos_embed_similarity(m), F.cosine_similarity(e[:, None], e[None], dim=-1))


def relative_bias_by_hand(table, cls, grid):
    """The bias (heads, N, N) of the documented layout, entry by entry."""
    gh, gw = grid
    n = gh * gw
    prefix = 0 if cls is None else 1
    bias = torch.zeros(table.shape[0], prefix + n, prefix + n)
    for p in range(n):
        for q in range(n):
            dy, dx = p // gw - q // gw, p % gw - q % gw  # query minus key
            bias[:, prefix + p, prefix + q] = table[:, dy + gh - 1, dx + gw - 1]
    if cls is not None:
        bias[:, 0, 1:] = cls[:, 0, None]  # the class token attending to a patch
        bias[:, 1:, 0] = cls[:, 1, None]  # a patch attending to the class token
        bias[:, 0, 0] = cls[:, 2]         # the class token attending to itself
    return bias


@pytest.mark.parametrize("pool", POOLS)
def test_relative_bias_layout(pool):
    m = jitter(vit("relative", pool, img_size=(16, 24)))  # a 2x3 grid: tables of 3x5 offsets
    attn = m.blocks[1].attn
    assert attn.relative_position_bias_table.shape == (3, 3, 5)
    cls = attn.relative_position_bias_cls if pool == "cls" else None
    want = relative_bias_by_hand(attn.relative_position_bias_table.detach(), cls, (2, 3))
    torch.testing.assert_close(attn.relative_bias().detach(), want, atol=0, rtol=0)


def test_relative_resample_is_2d_interpolation_of_each_table():
    # a 2x2 grid (tables 3x3) to 4x2 (tables 7x3), bilinear: rows 3 -> 7, columns kept
    src = jitter(vit("relative", img_size=16))
    model = load_pretrained(vit("relative", img_size=(32, 16)), src.state_dict(), interpolation="bilinear")
    wy = linear_weights(3, 7)
    for blk_src, blk in zip(src.blocks, model.blocks):
        old = blk_src.attn.relative_position_bias_table.detach()
        new = blk.attn.relative_position_bias_table.detach()
        assert new.shape == (3, 7, 3)
        torch.testing.assert_close(new, wy @ old)  # (7, 3) @ (heads, 3, 3)
        assert torch.equal(blk.attn.relative_position_bias_cls, blk_src.attn.relative_position_bias_cls)
        # the bias of the new grid indexes the resampled table by the offsets of the 4x2 grid
        want = relative_bias_by_hand(new, blk.attn.relative_position_bias_cls.detach(), (4, 2))
        torch.testing.assert_close(blk.attn.relative_bias().detach(), want)
    # the default (bicubic) and the forward pass at another size resample the same way
    table = src.blocks[0].attn.relative_position_bias_table.detach()
    bicubic = F.interpolate(table[None], size=(7, 3), mode="bicubic", antialias=True, align_corners=False)[0]
    torch.testing.assert_close(resample_rel_table(table, (4, 2)), bicubic)
    torch.testing.assert_close(src.blocks[0].attn.relative_bias((4, 2)).detach(),
                               relative_bias_by_hand(bicubic, src.blocks[0].attn.relative_position_bias_cls.detach(),
                                                     (4, 2)))


def test_loading_another_kind_names_it():
    learned = jitter(vit("learned")).state_dict()
    with pytest.raises(UserError, match="pos_embed='relative'"):
        load_pretrained(vit("relative"), learned)
    with pytest.raises(UserError, match="relative position biases"):
        load_pretrained(vit("learned"), jitter(vit("relative")).state_dict())
    with pytest.raises(UserError, match="shape mismatch for blocks.0.attn.relative_position_bias_table"):
        load_pretrained(vit("relative", num_heads=4), jitter(vit("relative")).state_dict())


# ------------------------------------------------------------------------------------------------
# what each option means
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pos_embed", POS_EMBEDS)
def test_only_none_is_blind_to_patch_order(pos_embed):
    """Shuffling the patches of the input permutes the tokens; with pool='avg' (a mean over the
    tokens) a model without position information gives the same logits. Every other option sees
    the change, so any position information leaking into 'none' would fail this test."""
    model = jitter(vit(pos_embed, "avg"))
    x = images()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(16))
    with torch.no_grad():
        a, b = model(x), model(shuffle_patches(x, 8, perm))
    if pos_embed == "none":
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    else:
        assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("pool", POOLS)
def test_none_is_permutation_invariant(pool):
    model = jitter(vit("none", pool))
    x = images()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(shuffle_patches(x, 8, perm)), model(x), atol=1e-5, rtol=1e-5)
        # token by token: the patch tokens are permuted with the patches
        f, g = model.forward_features(x), model.forward_features(shuffle_patches(x, 8, perm))
        p = 1 if pool == "cls" else 0
        torch.testing.assert_close(g[:, p:], f[:, p:][:, perm], atol=1e-5, rtol=1e-5)
    assert not hasattr(model, "pos_table") and model.pos_embed is None and not position_params(model)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("hw", [(32, 32), (48, 24)], ids=["built", "other-size"])
def test_relative_fused_and_manual_paths_agree(pool, hw):
    model = jitter(vit("relative", pool))
    x = images(hw)
    grid = model.patch_embed.grid_for(*hw)

    def manual_features(x):  # the blocks on the manual path (the one attention_maps takes)
        t = model.embed(x)
        for blk in model.blocks:
            t, _ = blk(t, return_attn=True, grid=grid)
        return model.norm(t)

    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(manual_features(x)), model(x), atol=1e-5, rtol=0)
    # the gradients of the bias tables agree too (a loss over every token reaches every table)
    grads = []
    for features in (model.forward_features, manual_features):
        model.zero_grad()
        features(x).square().mean().backward()
        grads.append([p.grad.clone() for n, p in model.named_parameters() if "relative_position" in n])
    assert len(grads[0]) == (4 if pool == "cls" else 2)
    for g_fused, g_manual in zip(*grads):
        assert g_fused.abs().sum() > 0
        torch.testing.assert_close(g_fused, g_manual, atol=1e-5, rtol=1e-4)

    maps = model.attention_maps(x)
    n = grid[0] * grid[1] + (pool == "cls")
    assert len(maps) == 2 and maps[0].shape == (2, 3, n, n)
    for a in maps:
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, n))


def test_relative_bias_tables_change_the_output():
    model = jitter(vit("relative"))
    x = images()
    with torch.no_grad():
        before = model(x)
        model.blocks[0].attn.relative_position_bias_table[1, 2, 4] += 1.0  # one head, one offset
        after = model(x)
        assert not torch.allclose(before, after, atol=1e-4)
        model.blocks[1].attn.relative_position_bias_cls[0, 0] += 1.0  # the class token's row
        assert not torch.allclose(after, model(x), atol=1e-4)


def test_pos_embed_similarity_refuses_none_and_relative():
    for kind in ("none", "relative"):
        with pytest.raises(NotAnalysable, match=f"pos_embed='{kind}' has no") as e:
            pos_embed_similarity(vit(kind))
        assert "'vit'" in str(e.value) and "\n" not in str(e.value)
    sim = pos_embed_similarity(vit("sincos"))
    torch.testing.assert_close(sim.diagonal(), torch.ones(16))


@pytest.mark.parametrize("pos_embed", ["learned_2d", "relative"])
def test_hybrid_takes_the_new_options(pos_embed):
    torch.manual_seed(0)
    model = vitlab.create_model("vit_hybrid_cifar", depth=1, pos_embed=pos_embed).eval()
    with torch.no_grad():
        assert model(images()).shape == (2, 10)
        assert model(images((48, 48))).shape == (2, 10)
