"""The checkpoints people fine-tune most load into vitlab ViTs with the matching
options and give the reference model's logits: timm's plain ViT, average
pooling with ``fc_norm`` (with and without a class token), layer scale, DeiT
distilled; Hugging Face ViT and DeiT; Google ``.npz``. Layouts vitlab cannot
represent are refused in one line. ``weights_normalisation`` says which mean
and std the weights were trained with.

Reference models are timm's / transformers' own classes at a tiny size
(32 px, patch 8, width 64, 2 blocks, 2 heads) with random weights.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

import vitlab
from test_weights import _assert_same, _jitter, _need, _save, _to_npz
from vitlab.errors import UserError
from vitlab.weights import load_pretrained, weights_normalisation

TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10)
TINY_VITLAB = dict(TINY, mlp_dim=256)  # timm's mlp_ratio 4

# variant -> (timm model name, timm overrides, vitlab options)
VARIANTS = {
    "plain": ("vit_tiny_patch16_224", {}, {}),
    "avg-fc_norm": ("vit_tiny_patch16_224", dict(global_pool="avg", fc_norm=True, class_token=False),
                    dict(pool="avg", fc_norm=True)),
    "avg-fc_norm-cls": ("vit_tiny_patch16_224", dict(global_pool="avg", fc_norm=True, class_token=True),
                        dict(pool="avg", fc_norm=True, class_token=True)),
    "avg-cls": ("vit_tiny_patch16_224", dict(global_pool="avg", fc_norm=False, class_token=True),
                dict(pool="avg", class_token=True)),
    "layer_scale": ("vit_tiny_patch16_224", dict(init_values=1e-5), dict(layer_scale=1e-5)),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", {}, dict(distilled=True)),
}


def _timm(variant: str, **extra) -> torch.nn.Module:
    timm = _need("timm")
    name, kw, _ = VARIANTS[variant]
    return _jitter(timm.create_model(name, pretrained=False, **{**TINY, **kw, **extra}))


def _vitlab(variant: str, **extra) -> torch.nn.Module:
    return vitlab.create_model("vit", **{**TINY_VITLAB, **VARIANTS[variant][2], **extra}).eval()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _one_line_error(fn, match: str) -> str:
    with pytest.raises(UserError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


# ------------------------------------------------------------------------------------------------
# timm: every variant, from a .pth and a .safetensors file
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [".pth", ".safetensors"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_timm_variant_logits_match(variant, fmt, tmp_path):
    ref = _timm(variant)
    path = _save(ref.state_dict(), tmp_path / f"w{fmt}")
    model = load_pretrained(_vitlab(variant), path)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    x = _x()
    with torch.no_grad():
        _assert_same(model(x), ref(x))
        _assert_same(model.forward_head(model.forward_features(x), pre_logits=True),
                     ref.forward_head(ref.forward_features(x), pre_logits=True))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_timm_variant_other_classes_get_zero_head(variant, tmp_path, caplog):
    ref = _timm(variant)
    path = _save(ref.state_dict(), tmp_path / "w.safetensors")
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        model = load_pretrained(_vitlab(variant, num_classes=3), path)
    assert "10 classes" in caplog.text
    heads = [model.head] + ([model.head_dist] if model.distilled else [])
    for h in heads:
        assert h.out_features == 3
        assert torch.count_nonzero(h.weight) == 0 and torch.count_nonzero(h.bias) == 0
    with torch.no_grad():
        assert torch.count_nonzero(model(_x())) == 0
    for k, v in ref.state_dict().items():  # everything but the heads is the checkpoint's
        if not k.startswith(("head.", "head_dist.")):
            assert torch.equal(model.state_dict()[k], v), k


def test_layer_scale_gammas_are_loaded():
    ref = _timm("layer_scale")
    model = load_pretrained(_vitlab("layer_scale"), ref.state_dict())
    assert torch.equal(model.blocks[1].ls2.gamma, ref.blocks[1].ls2.gamma)
    assert not torch.allclose(model.blocks[1].ls2.gamma, torch.full((64,), 1e-5))


def test_avg_with_class_token_averages_patch_tokens_only():
    """timm's global_pool='avg' with a class token leaves the class token out of the mean."""
    model = load_pretrained(_vitlab("avg-fc_norm-cls"), _timm("avg-fc_norm-cls").state_dict())
    x = _x()
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 17, 64)
        expect = model.head(model.fc_norm(tokens[:, 1:].mean(dim=1)))
        _assert_same(model(x), expect)
        wrong = model.head(model.fc_norm(tokens.mean(dim=1)))
        assert (model(x) - wrong).abs().max() > 1e-3


def test_deit3_style_no_embed_class_and_facebook_gamma_names():
    """DeiT-III: layer scale and a position table without the class token's entry
    (timm no_embed_class); Facebook's checkpoints name the scales gamma_1 / gamma_2."""
    timm_vit = _need("timm.models.vision_transformer")
    ref = _jitter(timm_vit.VisionTransformer(**TINY, init_values=1e-6, no_embed_class=True))
    fb = {k.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2"): v
          for k, v in ref.state_dict().items()}
    assert "blocks.0.gamma_1" in fb
    for sd in (ref.state_dict(), fb):
        model = load_pretrained(_vitlab("plain", layer_scale=1e-6), sd)
        assert torch.count_nonzero(model.pos_embed[:, 0]) == 0  # the class token gets no position
        with torch.no_grad():
            _assert_same(model(_x()), ref(_x()))


def test_mask_token_is_dropped(caplog):
    sd = dict(_timm("layer_scale").state_dict(), mask_token=torch.zeros(1, 64))  # DINOv2 / MAE
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        load_pretrained(_vitlab("layer_scale"), sd)
    assert "mask token dropped" in caplog.text


# ------------------------------------------------------------------------------------------------
# DeiT distilled
# ------------------------------------------------------------------------------------------------
def test_distilled_output_is_mean_of_heads():
    ref = _timm("deit-distilled")
    model = load_pretrained(_vitlab("deit-distilled"), ref.state_dict())
    x = _x()
    with torch.no_grad():
        t = model.forward_features(x)
        assert t.shape == (2, 18, 64)  # class token, distillation token, 16 patches
        _assert_same(model(x), (model.head(t[:, 0]) + model.head_dist(t[:, 1])) / 2)
        model.train()  # the same in training: vitlab trains both heads on the labels
        _assert_same(model(x), ref(x))


def test_distilled_into_plain_model_drops_distillation_token(caplog):
    """The distillation token, its position entry and head_dist are dropped: the model is
    timm's plain ViT with the rest of the weights. Its logits are not the distilled model's
    class-head output: the class token no longer attends to a distillation token."""
    timm = _need("timm")
    ref = _timm("deit-distilled")
    sd = ref.state_dict()
    with caplog.at_level(logging.INFO, logger="vitlab.weights"):
        model = load_pretrained(_vitlab("plain"), sd)
    assert "distillation token dropped" in caplog.text and "head_dist" in caplog.text
    assert model.num_prefix_tokens == 1 and model.pos_embed.shape == (1, 17, 64)

    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY).eval()
    pos = torch.cat([sd["pos_embed"][:, :1], sd["pos_embed"][:, 2:]], dim=1)
    plain.load_state_dict({**{k: v for k, v in sd.items() if k not in ("dist_token", "head_dist.weight",
                                                                        "head_dist.bias")}, "pos_embed": pos})
    x = _x()
    with torch.no_grad():
        _assert_same(model(x), plain(x))
        cls_head_of_distilled = ref.head(ref.forward_features(x)[:, 0])
        assert (model(x) - cls_head_of_distilled).abs().max() > 1e-3


def test_distilled_into_avg_model_drops_both_tokens():
    model = load_pretrained(_vitlab("plain", pool="avg"), _timm("deit-distilled").state_dict())
    assert model.cls_token is None and model.pos_embed.shape == (1, 16, 64)


def test_distilled_resampled_like_timm():
    """Another resolution: both prefix entries kept aside, the patch grid resampled (timm's
    DeiT filter with num_prefix_tokens=2)."""
    timm = _need("timm")
    from timm.models.deit import checkpoint_filter_fn
    sd = _timm("deit-distilled").state_dict()
    ref = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **{**TINY, "img_size": 48}).eval()
    ref.load_state_dict(checkpoint_filter_fn(dict(sd), ref))
    model = load_pretrained(_vitlab("deit-distilled", img_size=48), sd)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        _assert_same(model(x), ref(x))


def test_hf_deit_with_teacher_logits_match(tmp_path):
    transformers = _need("transformers")
    cfg = transformers.DeiTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=256, image_size=32, patch_size=8, num_labels=10,
                                  layer_norm_eps=1e-6, hidden_act="gelu")
    ref = _jitter(transformers.DeiTForImageClassificationWithTeacher(cfg))
    ref.save_pretrained(tmp_path)
    model = load_pretrained(_vitlab("deit-distilled"), tmp_path)
    x = _x()
    with torch.no_grad():
        _assert_same(model(x), ref(pixel_values=x).logits)


def test_registered_deit_name_takes_timm_weights():
    timm = _need("timm")
    ref = _jitter(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1))
    model = load_pretrained(vitlab.create_model("deit_ti16_distilled", depth=1).eval(), ref.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _assert_same(model(x), ref(x))


# ------------------------------------------------------------------------------------------------
# the plain ViT from Hugging Face and Google .npz
# ------------------------------------------------------------------------------------------------
def _hf_tiny():
    transformers = _need("transformers")
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=256, image_size=32, patch_size=8, num_channels=3,
                                 layer_norm_eps=1e-6, hidden_act="gelu", num_labels=10)
    return _jitter(transformers.ViTForImageClassification(cfg))


@pytest.mark.parametrize("target", ["folder", "model.safetensors"])
def test_plain_from_hf_save_pretrained(target, tmp_path):
    ref = _hf_tiny()
    ref.save_pretrained(tmp_path)
    source = tmp_path if target == "folder" else tmp_path / target
    model = load_pretrained(_vitlab("plain"), source)
    x = _x()
    with torch.no_grad():
        _assert_same(model(x), ref(pixel_values=x).logits)
    tuned = load_pretrained(_vitlab("plain", num_classes=4), source)
    with torch.no_grad():
        assert torch.count_nonzero(tuned(x)) == 0


def test_plain_from_google_npz(tmp_path):
    ref = _timm("plain")
    path = _to_npz(ref.state_dict(), 2, tmp_path / "ViT-Ti_16.npz")
    model = load_pretrained(_vitlab("plain"), path)
    x = _x()
    with torch.no_grad():
        _assert_same(model(x), ref(x))
    tuned = load_pretrained(_vitlab("plain", num_classes=4), path)
    assert torch.count_nonzero(tuned.head.weight) == 0
    with torch.no_grad():
        assert torch.count_nonzero(tuned(x)) == 0


# ------------------------------------------------------------------------------------------------
# what does not fit: refused in one line
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strict", [True, False])
def test_register_tokens_refused(strict):
    timm_vit = _need("timm.models.vision_transformer")
    sd = timm_vit.VisionTransformer(**TINY, reg_tokens=4, no_embed_class=True).state_dict()
    _one_line_error(lambda: load_pretrained(_vitlab("plain"), sd, strict=strict), "register tokens.*cannot represent")


def test_qk_norm_refused():
    timm_vit = _need("timm.models.vision_transformer")
    sd = timm_vit.VisionTransformer(**TINY, qk_norm=True).state_dict()
    _one_line_error(lambda: load_pretrained(_vitlab("plain"), sd), r"query/key normalisation.*q_norm")


def test_resnet_state_dict_into_vit_refused(tmp_path):
    torchvision = _need("torchvision")
    path = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    _one_line_error(lambda: load_pretrained(_vitlab("plain"), path), r"ResNet .*state dict")
    # into a vitlab ResNet, whose names are torchvision's, it loads
    load_pretrained(vitlab.create_model("resnet18"), path)


def test_swin_and_convnext_state_dicts_refused():
    _need("timm")
    from timm.models.convnext import ConvNeXt
    from timm.models.swin_transformer import SwinTransformer
    swin = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1),
                           num_heads=(1, 1), num_classes=10).state_dict()
    _one_line_error(lambda: load_pretrained(_vitlab("plain"), swin), "Swin Transformer state dict")
    convnext = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=10).state_dict()
    _one_line_error(lambda: load_pretrained(_vitlab("plain"), convnext), "ConvNeXt state dict")


@pytest.mark.parametrize("ckpt,model_opts,match", [
    ("avg-fc_norm", dict(pool="avg"), "fc_norm=True"),
    ("layer_scale", {}, r"layer_scale set"),
    ("plain", dict(layer_scale=1e-5), "layer_scale=None"),
    ("plain", dict(distilled=True), "distilled=False"),
    ("plain", dict(pool="avg", fc_norm=True), "fc_norm=False"),
])
def test_option_mismatch_names_the_option(ckpt, model_opts, match):
    sd = _timm(ckpt).state_dict()
    _one_line_error(lambda: load_pretrained(_vitlab("plain", **model_opts), sd), match)


# ------------------------------------------------------------------------------------------------
# the model protocol with the new options
# ------------------------------------------------------------------------------------------------
OPTION_SETS = {
    "avg-fc_norm-cls": dict(pool="avg", class_token=True, fc_norm=True),
    "cls-fc_norm": dict(fc_norm=True),
    "layer_scale": dict(layer_scale=1e-5),
    "distilled": dict(distilled=True),
    "everything": dict(pool="avg", class_token=True, fc_norm=True, layer_scale=1e-6),
}


@pytest.mark.parametrize("pos_embed", ["learned", "learned_2d", "sincos", "none", "relative"])
@pytest.mark.parametrize("opts", list(OPTION_SETS))
def test_protocol_with_every_pos_embed(opts, pos_embed):
    torch.manual_seed(0)
    kw = dict(TINY_VITLAB, num_classes=5, pos_embed=pos_embed, **OPTION_SETS[opts])
    model = vitlab.create_model("vit", **kw)
    assert model.model_args["pos_embed"] == pos_embed
    torch.nn.init.normal_(model.head.weight, std=0.02)  # a zero head passes no gradient down
    if model.distilled:
        torch.nn.init.normal_(model.head_dist.weight, std=0.02)
    x = torch.randn(2, 3, 32, 32)
    prefix = model.num_prefix_tokens
    feats = model.forward_features(x)
    assert feats.shape == (2, prefix + 16, 64)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    out = model(x)
    assert out.shape == (2, 5)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    maps = model.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (2, 2, prefix + 16, prefix + 16)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, prefix + 16), atol=1e-5)
    tokens = model.embed(x)
    for blk in model.blocks:  # the manual path (attention maps) and the fused one agree
        fused, (manual, _) = blk(tokens, grid=(4, 4)), blk(tokens, return_attn=True, grid=(4, 4))
        assert torch.allclose(fused, manual, atol=1e-5)
        tokens = fused
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 5)  # another grid
    # a vitlab checkpoint of it loads back exactly
    again = load_pretrained(vitlab.create_model("vit", **kw).eval(), model.state_dict())
    with torch.no_grad():
        _assert_same(again(x), model(x))


def test_reset_classifier_zero_inits_both_heads_and_no_weight_decay():
    model = _vitlab("deit-distilled")
    model.model_args = {"num_classes": 10}
    model.reset_classifier(7)
    for h in (model.head, model.head_dist):
        assert h.out_features == 7 and torch.count_nonzero(h.weight) == 0 and torch.count_nonzero(h.bias) == 0
    assert model.num_classes == 7 and model.model_args["num_classes"] == 7
    model.reset_classifier(0)
    assert model(_x()).shape == (2, 64)
    assert model.no_weight_decay() >= {"cls_token", "dist_token", "pos_embed"}
    assert "dist_token" not in _vitlab("plain").no_weight_decay()


def test_init_of_new_parameters():
    torch.manual_seed(0)
    for mode in ("jax", "timm"):
        m = vitlab.create_model("vit", **TINY_VITLAB, layer_scale=1e-5, weight_init=mode)
        assert torch.equal(m.blocks[0].ls1.gamma, torch.full((64,), 1e-5))
        d = vitlab.create_model("vit", **TINY_VITLAB, distilled=True, weight_init=mode)
        assert 0.01 < d.dist_token.std() < 0.03  # truncated normal(.02), apart from the class token
        if mode == "jax":
            assert torch.count_nonzero(d.head_dist.weight) == 0
        f = vitlab.create_model("vit", **TINY_VITLAB, pool="avg", fc_norm=True, weight_init=mode)
        assert isinstance(f.norm, torch.nn.Identity) and torch.equal(f.fc_norm.weight, torch.ones(64))


def test_new_options_are_model_options_and_checked():
    options = vitlab.models.model_options("vit")
    assert {"class_token", "fc_norm", "layer_scale", "distilled"} <= set(options)
    defaults = vitlab.models.model_defaults("vit")
    assert (defaults["class_token"], defaults["fc_norm"], defaults["layer_scale"], defaults["distilled"]) == \
        (None, False, None, False)
    for bad, match in [(dict(class_token=False), "class_token=False needs pool='avg'"),
                       (dict(distilled=True, pool="avg"), "needs pool='cls'"),
                       (dict(distilled=True, fc_norm=True), "takes no fc_norm"),
                       (dict(layer_scale=0.0), "layer_scale")]:
        with pytest.raises(ValueError, match=match):
            vitlab.create_model("vit", **TINY_VITLAB, **bad)


def test_learned_2d_distilled_into_plain_keeps_class_entry():
    kw = dict(TINY_VITLAB, pos_embed="learned_2d")
    src = _jitter(vitlab.create_model("vit", **kw, distilled=True))
    assert src.pos_embed_cls.shape == (1, 2, 64)
    model = load_pretrained(vitlab.create_model("vit", **kw).eval(), src.state_dict())
    assert torch.equal(model.pos_embed_cls, src.pos_embed_cls[:, :1])


# ------------------------------------------------------------------------------------------------
# weights_normalisation
# ------------------------------------------------------------------------------------------------
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_normalisation_google_npz_and_in21k(tmp_path):
    mean, std, where = weights_normalisation(_to_npz(_timm("plain").state_dict(), 2, tmp_path / "w.npz"))
    assert (mean, std) == HALF and ".npz" in where
    in21k = _need("timm").create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY, "num_classes": 21843})
    path = _save(in21k.state_dict(), tmp_path / "in21k.safetensors")
    mean, std, where = weights_normalisation(path)
    assert (mean, std) == HALF and "21,843" in where


def test_normalisation_deit_and_unknown(tmp_path):
    mean, std, where = weights_normalisation(_save(_timm("deit-distilled").state_dict(), tmp_path / "d.pth"))
    assert (mean, std) == IMAGENET and "DeiT" in where
    assert weights_normalisation(_timm("plain").state_dict()) is None
    assert weights_normalisation(_save(_timm("plain").state_dict(), tmp_path / "p.safetensors")) is None
    with pytest.raises(UserError, match="not found"):
        weights_normalisation(tmp_path / "nope.pth")


def test_normalisation_hf_preprocessor_config_and_timm_config(tmp_path):
    hf = tmp_path / "hf"
    _hf_tiny().save_pretrained(hf)
    assert weights_normalisation(hf) is None  # no preprocessor config: not known
    (hf / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    for source in (hf, hf / "model.safetensors"):
        mean, std, where = weights_normalisation(source)
        assert (mean, std) == IMAGENET and "preprocessor_config.json" in where
    hub = tmp_path / "timm"
    hub.mkdir()
    _save(_timm("plain").state_dict(), hub / "model.safetensors")
    (hub / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224",
                                                 "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    mean, std, where = weights_normalisation(hub / "model.safetensors")
    assert (mean, std) == HALF and "pretrained_cfg" in where


def test_normalisation_vitlab_checkpoint(tmp_path):
    model = _vitlab("plain")
    ckpt = {"model": model.state_dict(), "model_name": "vit", "model_args": model.model_args,
            "dataset": {"name": "cifar10", "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}}
    path = tmp_path / "best.pt"
    torch.save(ckpt, path)
    for source in (path, ckpt):
        mean, std, where = weights_normalisation(source)
        assert (mean, std) == ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)) and "cifar10" in where
