"""VT (Wu et al.): each equation against a direct computation from the module's own
weights, batch independence, gradients, and the VT-ResNets' parameters and MACs
against the paper's Tables 2 and 8."""

from __future__ import annotations

import pytest
import torch

import vitlab
from vitlab import cli
from vitlab.models.vt import (FilterTokenizer, PoolingTokenizer, Projector, RecurrentTokenizer, TokenTransformer,
                              VTModule)

B, H, W, C, L, CT = 2, 5, 6, 8, 4, 12


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(B, H * W, C)  # pixels (B, HW, C)


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


# --------------------------------------------------------------------------- the equations


def test_filter_tokenizer_is_eq_1(x):
    tok = _randomise(FilterTokenizer(C, L, CT))
    t, a = tok(x)
    assert t.shape == (B, L, CT) and a.shape == (B, H * W, L)
    # A = softmax over HW of X W_A: every column is a spatial attention summing to 1
    expect_a = torch.softmax(x @ tok.attn.weight.T, dim=1)
    assert torch.allclose(a, expect_a, atol=1e-6)
    assert torch.allclose(a.sum(dim=1), torch.ones(B, L), atol=1e-6) and (a >= 0).all()
    # the tokens before the value projection are those convex combinations of the pixels
    pre = torch.einsum("bnl,bnc->blc", expect_a, x)
    assert torch.allclose(t, pre @ tok.value.weight.T, atol=1e-5)
    lo, hi = x.min(dim=1).values, x.max(dim=1).values  # inside the pixels' bounding box, channel by channel
    assert (pre >= lo[:, None] - 1e-6).all() and (pre <= hi[:, None] + 1e-6).all()


def test_recurrent_tokenizer_is_eq_2(x):
    tok = _randomise(RecurrentTokenizer(C, L, CT))
    t_in = torch.randn(B, L, CT)
    t, a = tok(x, t_in)
    w_r = t_in @ tok.t2r.weight.T  # W_R = T_in W_{T->R}: (B, L, C)
    expect_a = torch.softmax(x @ w_r.transpose(1, 2), dim=1)
    assert torch.allclose(a, expect_a, atol=1e-6)
    assert torch.allclose(a.sum(dim=1), torch.ones(B, L), atol=1e-6)
    assert torch.allclose(t, (expect_a.transpose(1, 2) @ x) @ tok.value.weight.T, atol=1e-5)
    # the tokens in steer the grouping: other tokens, other attention
    assert not torch.allclose(tok(x, t_in + 1.0)[1], a)


def test_recurrent_tokenizer_half_keeps_the_second_half(x):
    tok = _randomise(RecurrentTokenizer(C, L, CT, half=True))
    t_in = torch.randn(B, L, CT)
    t, a = tok(x, t_in)
    assert t.shape == (B, L, CT) and a.shape == (B, H * W, L // 2)
    assert torch.equal(t[:, L // 2:], t_in[:, L // 2:])
    w_r = t_in[:, :L // 2] @ tok.t2r.weight.T
    expect = (torch.softmax(x @ w_r.transpose(1, 2), dim=1).transpose(1, 2) @ x) @ tok.value.weight.T
    assert torch.allclose(t[:, :L // 2], expect, atol=1e-5)


def test_pooling_tokenizer_averages_cells(x):
    tok = _randomise(PoolingTokenizer(C, L, CT))  # 4 tokens: a 2x2 grid
    t, a = tok(x, size=(H, W))
    grid = x.transpose(1, 2).reshape(B, C, H, W)
    top_left = grid[:, :, :3, :3].mean(dim=(2, 3))  # adaptive pooling of 5x6 into 2x2: rows 0-2, cols 0-2
    assert a is None and torch.allclose(t[:, 0], top_left @ tok.value.weight.T, atol=1e-5)


@pytest.mark.parametrize("scale, heads, norm", [(True, 1, False), (False, 1, False), (True, 2, False),
                                               (True, 1, True)])
def test_transformer_is_eqs_3_and_4(scale, heads, norm):
    torch.manual_seed(0)
    tr = _randomise(TokenTransformer(CT, CT // 2, heads=heads, attn_scale=scale, norm=norm))
    ln = (lambda z, m: torch.nn.functional.layer_norm(z, (CT,), m.weight, m.bias)) if norm else (lambda z, m: z)
    t = torch.randn(B, L, CT)
    out, attn = tr(t, return_attn=True)
    dk = CT // 2 // heads
    k = (t @ tr.key.weight.T).reshape(B, L, heads, dk).transpose(1, 2)
    q = (t @ tr.query.weight.T).reshape(B, L, heads, dk).transpose(1, 2)
    logits = k @ q.transpose(-2, -1) * (dk ** -0.5 if scale else 1.0)  # (T K)(T Q)^T
    a = torch.softmax(logits, dim=-1)  # over L
    assert torch.allclose(attn, a, atol=1e-6)
    mixed = (a @ t.reshape(B, L, heads, CT // heads).transpose(1, 2)).transpose(1, 2).reshape(B, L, CT)
    t1 = ln(t + mixed, tr.norm1)  # eq. (3) (norm=True: post-norm)
    expect = ln(t1 + torch.relu(t1 @ tr.f1.weight.T) @ tr.f2.weight.T, tr.norm2)  # eq. (4)
    assert torch.allclose(out, expect, atol=1e-4)


def test_transformer_output_depends_on_key_and_query():
    """A transformer that ignores its encoder (nn.Transformer with zero decoder layers returns
    LayerNorm(tokens)) would give the same output whatever K and Q are."""
    torch.manual_seed(0)
    tr = _randomise(TokenTransformer(CT, CT // 2))
    t = torch.randn(B, L, CT)
    out = tr(t)
    for w in (tr.key.weight, tr.query.weight):
        kept = w.detach().clone()
        with torch.no_grad():
            w.mul_(3.0)
        assert not torch.allclose(tr(t), out, atol=1e-4)
        with torch.no_grad():
            w.copy_(kept)
    assert torch.equal(tr(t), out)


@pytest.mark.parametrize("ct", [CT, C])
def test_projector_is_eq_5(x, ct):
    pr = _randomise(Projector(C, ct))
    t = torch.randn(B, L, ct)
    out = pr(x, t)
    assert out.shape == x.shape
    a = torch.softmax((x @ pr.query.weight.T) @ (t @ pr.key.weight.T).transpose(1, 2) * C ** -0.5, dim=-1)
    value = t if ct == C else t @ pr.value.weight.T  # eq. (5) adds T itself when the widths agree
    assert torch.allclose(out, x + a @ value, atol=1e-5)
    assert isinstance(pr.value, torch.nn.Identity) == (ct == C)


def test_position_encoding_from_attention_maps(x):
    torch.manual_seed(0)
    m = _randomise(VTModule(C, L, CT, "filter", CT // 2, 1, True, False, pos_encoding=True, project=False))
    plain = VTModule(C, L, CT, "filter", CT // 2, 1, True, False, pos_encoding=False, project=False)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("pos.")})
    _, with_pos = m(x, None, (H, W))
    _, without = plain(x, None, (H, W))
    assert not torch.allclose(with_pos, without)
    with pytest.raises(ValueError, match="pos_encoding"):
        VTModule(C, L, CT, "pooling", CT // 2, 1, True, False, pos_encoding=True, project=False)


# --------------------------------------------------------------------------- VT-ResNet


@pytest.mark.parametrize("name", ["vt_resnet18", "vt_resnet50"])
def test_per_image_output_does_not_depend_on_the_batch(name):
    torch.manual_seed(0)
    model = vitlab.create_model(name, num_classes=7, stem="cifar").eval()  # BN on running statistics
    torch.nn.init.normal_(model.fc.weight, std=0.1)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        for n in (1, 3):
            assert torch.allclose(model(x[:n]), full[:n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, {"tokenizer": "pooling"}, {"recurrent_half": True, "pos_encoding": True},
                                    {"heads": 4, "attn_scale": False, "norm": True}])
def test_gradients_reach_every_vt_parameter(kwargs):
    torch.manual_seed(0)
    model = vitlab.create_model("vt_resnet18", num_classes=5, stem="cifar", **kwargs)
    torch.nn.init.normal_(model.fc.weight, std=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    names = [n for n, _ in model.named_parameters() if n.startswith("vt.")]
    assert names
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {n}"


def test_vt_resnet_structure():
    m = vitlab.create_model("vt_resnet18")
    assert [type(mod.tokenizer).__name__ for mod in m.vt] == ["FilterTokenizer", "RecurrentTokenizer"]
    assert m.vt[0].projector is not None and m.vt[-1].projector is None  # the head reads the tokens
    assert m.forward_features(torch.randn(2, 3, 224, 224)).shape == (2, 16, 1024)
    m = vitlab.create_model("vt_resnet34", tokenizer="pooling", num_tokens=32)
    assert len(m.vt) == 3 and all(type(mod.tokenizer).__name__ == "PoolingTokenizer" for mod in m.vt)
    assert m.vt[0].tokenizer.grid == (4, 8)
    assert len(vitlab.create_model("vt_resnet50").vt) == 3
    with pytest.raises(ValueError, match="tokenizer"):
        vitlab.create_model("vt_resnet18", tokenizer="conv")


# The paper's figures at 224 px with 1000 classes (Table 2: VT-R18, VT-R34; Table 8: VT-R50) beside
# vitlab's exact counts; the module docstring of vitlab.models.vt explains the differences.
PAPER = {"vt_resnet18": (11.6e6, 1.579e9), "vt_resnet34": (21.8e6, 3.299e9), "vt_resnet50": (21.4e6, 3.412e9)}
VITLAB = {"vt_resnet18": (11_479_592, 1_543_626_752), "vt_resnet34": (21_126_952, 3_245_662_208),
          "vt_resnet50": (21_762_600, 3_553_943_552)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_params_and_macs_against_the_paper(name):
    with torch.device("meta"):
        model = vitlab.create_model(name)
    params, macs = sum(p.numel() for p in model.parameters()), vitlab.count_flops(model, (3, 224, 224))
    assert (params, macs) == VITLAB[name]
    paper_params, paper_macs = PAPER[name]
    assert abs(params - paper_params) / paper_params < 0.10
    assert abs(macs - paper_macs) / paper_macs < 0.10


def test_vt_resnet_has_fewer_macs_than_its_resnet():
    """The paper's point: VT modules in place of the last stage save computation."""
    for depth in (18, 34, 50):
        with torch.device("meta"):
            vt, rn = vitlab.create_model(f"vt_resnet{depth}"), vitlab.create_model(f"resnet{depth}")
        assert vitlab.count_flops(vt, (3, 224, 224)) < vitlab.count_flops(rn, (3, 224, 224))


def test_models_and_flops_list_the_vt_resnets(capsys):
    assert cli.main(["models", "--family", "vt"]) == 0
    out = capsys.readouterr().out
    assert all(f"vt_resnet{d} " in out for d in (18, 34, 50)) and "11,479,592" in out
    assert cli.main(["flops", "vt_resnet18"]) == 0
    assert "11,479,592 parameters, 1.54 GMACs" in capsys.readouterr().out
