"""The ViT model: golden parameter counts, shapes, attention maps, overfitting."""

import math

import pytest
import torch

import vitlab
from tiny import n_params
from vitlab.models.pos_embed import sincos_2d
from vitlab.models.vit import SIZES, VisionTransformer

# Parameter counts of every registered model at its defaults. The paper's sizes equal
# timm's counts for the same architecture (1000 classes, no representation layer).
GOLDEN_PARAMS = {
    "vit": 86_567_656,
    "vit_ti16": 5_717_416,
    "vit_s16": 22_050_664,
    "vit_s32": 22_878_952,
    "vit_b16": 86_567_656,
    "vit_b32": 88_224_232,
    "vit_b8": 86_576_872,
    "vit_l16": 304_326_632,
    "vit_l32": 306_535_400,
    "vit_h14": 632_045_800,
    "vit_cifar": 6_268_810,
    "vit_tiny_imagenet": 10_824_008,
    "vit_tiny_imagenet_b23": 25_725_640,
    "vit_mnist": 205_962,
    # DeiT distilled: timm's deit_{tiny,small,base}_distilled_patch16_224
    "deit_ti16_distilled": 5_910_800,
    "deit_s16_distilled": 22_436_432,
    "deit_b16_distilled": 87_338_192,
}


def test_every_registered_vit_has_a_golden_count():
    assert set(vitlab.list_models("vit")) == set(GOLDEN_PARAMS)


@pytest.mark.parametrize("name", sorted(GOLDEN_PARAMS))
def test_param_count(name):
    with torch.device("meta"):
        model = vitlab.create_model(name)
    assert n_params(model) == GOLDEN_PARAMS[name]


def test_cifar_vit_of_the_issue():
    m = vitlab.create_model("vit", img_size=32, patch_size=4, embed_dim=384, depth=7, num_heads=12,
                            mlp_dim=384, num_classes=10)
    assert n_params(m) == 6_268_810


def test_size_table_matches_paper():
    assert SIZES["b"] == dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072)
    assert SIZES["l"] == dict(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096)
    assert SIZES["h"] == dict(embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120)


@pytest.mark.parametrize("name", sorted(GOLDEN_PARAMS))
def test_forward_backward_every_model(name):
    torch.manual_seed(0)
    d = vitlab.models.model_defaults(name)
    patch = d.get("patch_size", 16)
    # full width at a small input; depth cut to 2 keeps this fast (the counts above pin the depth)
    model = vitlab.create_model(name, img_size=2 * patch, num_classes=3, depth=min(d.get("depth", 12), 2))
    # the default head starts at zero, and every gradient below a zero head is exactly zero:
    # a random head lets the test see whether gradients reach every block
    torch.nn.init.normal_(model.head.weight, std=0.02)
    x = torch.randn(2, d.get("in_chans", 3), 2 * patch, 2 * patch)
    out = model(x)
    assert out.shape == (2, 3)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


def small(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_dim=96, num_classes=5)
    return VisionTransformer(**(args | kw))


def test_forward_features_shape_and_pools():
    x = torch.randn(2, 3, 32, 32)
    m = small()
    assert m.forward_features(x).shape == (2, 17, 48)  # 16 patches + class token
    m = small(pool="avg")
    assert m.cls_token is None
    assert m.forward_features(x).shape == (2, 16, 48)
    assert m(x).shape == (2, 5)


def test_rectangular_and_grey_inputs():
    m = small(img_size=(32, 48), in_chans=1)
    assert m.patch_embed.grid_size == (4, 6)
    assert m(torch.randn(2, 1, 32, 48)).shape == (2, 5)


def test_other_input_size_resamples_position_embeddings():
    m = small().eval()
    assert m(torch.randn(1, 3, 48, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="divisible"):
        small(img_size=30)


def test_sincos_position_embedding():
    m = small(pos_embed="sincos")
    assert m.pos_embed is None and "pos_table" not in m.state_dict()
    table = sincos_2d((4, 4), 48)
    assert table.shape == (16, 48)
    assert torch.allclose(m.pos_table[0, 1:], table)
    assert torch.equal(m.pos_table[0, 0], torch.zeros(48))
    # position 0 is (y=0, x=0): sin parts 0, cos parts 1
    assert torch.allclose(table[0], torch.cat([torch.zeros(12), torch.ones(12), torch.zeros(12), torch.ones(12)]))
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_representation_layer_and_headless():
    m = small(representation_size=64)
    assert m.pre_logits.fc.out_features == 64 and m.head.in_features == 64
    m = small(num_classes=0)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 48)


def test_reset_classifier_zero_head():
    m = small()
    m.reset_classifier(7)
    assert m.head.out_features == 7
    assert torch.count_nonzero(m.head.weight) == 0 and torch.count_nonzero(m.head.bias) == 0


def test_init_statistics_timm():
    """timm's scheme: trunc_normal_(std=.02) cuts at +-2 in absolute terms (100 std), so the
    weights are normal(.02), values beyond 2 std included; the patch embedding keeps PyTorch's
    default (Kaiming-uniform, bound 1/sqrt(fan_in)); the class token is normal(1e-6)."""
    torch.manual_seed(0)
    m = small(embed_dim=384, num_heads=6, mlp_dim=1536, depth=1, weight_init="timm")
    w = m.blocks[0].mlp.fc1.weight  # 590k draws: the sample std is within 1e-4 of the true one
    assert abs(w.std().item() - 0.02) < 3e-4
    frac_beyond_2std = (w.abs() > 0.04).float().mean().item()
    assert 0.04 < frac_beyond_2std < 0.052  # 4.55% for a normal distribution, 0 if cut at 2 std
    assert abs(m.pos_embed.std().item() - 0.02) < 0.002
    assert 0 < m.cls_token.abs().max() < 1e-5
    assert torch.count_nonzero(m.blocks[0].attn.qkv.bias) == 0
    assert abs(m.head.weight.std().item() - 0.02) < 0.002
    pe = m.patch_embed.proj.weight
    bound = 1 / math.sqrt(pe[0].numel())
    assert pe.abs().max() <= bound and pe.abs().max() > 0.95 * bound
    assert abs(pe.std().item() - bound / math.sqrt(3)) < 0.05 * bound


def test_trunc_normal_bound_is_absolute():
    from vitlab.models.layers import trunc_normal_
    w = trunc_normal_(torch.empty(100_000), std=1.0, bound=0.5)
    assert w.abs().max() <= 0.5 and w.abs().max() > 0.49
    w = trunc_normal_(torch.empty(100_000), std=1.0)  # default: cut at 2 std
    assert w.abs().max() <= 2.0 and (w.abs() > 1.9).any()


def test_init_statistics_jax():
    """The official code's scheme: Xavier-uniform dense layers (q, k, v as separate
    D x D matrices), LeCun-normal patch embedding, tiny MLP biases, zero head."""
    torch.manual_seed(0)
    m = small(embed_dim=384, num_heads=6, mlp_dim=1536, depth=1)  # 'jax' is the default
    b = m.blocks[0]
    fc1 = b.mlp.fc1.weight  # Xavier uniform: std sqrt(2 / (fan_in + fan_out)), bound sqrt(3) x std
    assert abs(fc1.std().item() - math.sqrt(2 / (384 + 1536))) < 0.001
    assert fc1.abs().max() <= math.sqrt(6 / (384 + 1536)) + 1e-6
    qkv = b.attn.qkv.weight  # each of q, k, v is a 384 x 384 Xavier matrix
    assert abs(qkv.std().item() - math.sqrt(2 / (384 + 384))) < 0.001
    pe = m.patch_embed.proj.weight  # LeCun normal: std sqrt(1 / fan_in), cut at 2 std
    fan_in = pe[0].numel()
    assert abs(pe.std().item() - math.sqrt(1 / fan_in)) < 0.05 * math.sqrt(1 / fan_in)
    assert pe.abs().max() <= 2 * math.sqrt(1 / fan_in) / 0.8796 + 1e-6
    assert 0 < b.mlp.fc1.bias.abs().max() < 1e-5 and torch.count_nonzero(b.attn.qkv.bias) == 0
    assert torch.count_nonzero(m.head.weight) == 0 and torch.count_nonzero(m.head.bias) == 0
    assert abs(m.pos_embed.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(m.cls_token) == 0
    with pytest.raises(ValueError, match="weight_init"):
        small(weight_init="xavier")


def test_no_weight_decay_names():
    assert small().no_weight_decay() == {"pos_embed", "cls_token"}


def test_unknown_model_and_argument_are_named():
    with pytest.raises(ValueError, match="did you mean 'vit_b16'"):
        vitlab.create_model("vit_b61")
    with pytest.raises(ValueError, match="depht"):
        vitlab.create_model("vit", depht=3)


def test_attention_maps_rows_sum_to_one_and_match_manual_softmax():
    torch.manual_seed(0)
    m = small().eval()
    x = torch.randn(2, 3, 32, 32)
    maps = m.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (2, 3, 17, 17)
    for a in maps:
        assert torch.allclose(a.sum(-1), torch.ones(2, 3, 17), atol=1e-5)
    # manual softmax(QK^T / sqrt(d)) for the first block
    blk = m.blocks[0]
    tokens = blk.norm1(m.embed(x))
    q, k, _ = blk.attn.qkv(tokens).split(48, dim=-1)
    q = q.reshape(2, 17, 3, 16).transpose(1, 2)
    k = k.reshape(2, 17, 3, 16).transpose(1, 2)
    manual = torch.softmax(q @ k.transpose(-2, -1) / 16 ** 0.5, dim=-1)
    assert torch.allclose(maps[0], manual, atol=1e-6)


def test_fused_and_manual_attention_agree():
    torch.manual_seed(0)
    m = small().eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = m.embed(x)
    for blk in m.blocks:
        fused = blk(tokens)
        manual, _ = blk(tokens, return_attn=True)
        assert torch.allclose(fused, manual, atol=1e-5)
        tokens = fused


def test_overfits_one_batch():
    torch.manual_seed(0)
    m = small(num_classes=4, img_size=16)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-2
    assert (m(x).argmax(-1) == y).all()


def test_drop_path_is_identity_in_eval_and_stochastic_in_train():
    m = small(drop_path=0.5, dropout=0.1)
    x = torch.randn(4, 3, 32, 32)
    m.eval()  # features, not logits: the head starts at zero
    assert torch.equal(m.forward_features(x), m.forward_features(x))
    m.train()
    torch.manual_seed(0)
    a = m.forward_features(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, m.forward_features(x))


@pytest.mark.parametrize("pos_embed, pool", [("none", "avg"), ("relative", "avg"), ("learned", "cls")])
@pytest.mark.parametrize("fc_norm", [False, True])
def test_the_residual_stream_is_float32_under_bf16_autocast(pos_embed, pool, fc_norm):
    """Under autocast the matmuls run in bf16, but the residual stream between blocks stays float32,
    also without a class token or position table to add in float32."""
    m = vitlab.create_model("vit", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_dim=64,
                            pos_embed=pos_embed, pool=pool, class_token=pool == "cls", fc_norm=fc_norm)
    seen = []
    for blk in m.blocks:
        blk.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(args[0].dtype), with_kwargs=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m(torch.randn(2, 3, 16, 16))
    assert seen == [torch.float32, torch.float32]
