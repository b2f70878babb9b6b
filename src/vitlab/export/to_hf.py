"""``--to hf``: a folder that ``transformers.ViTForImageClassification.from_pretrained(DIR)``
loads with no network and ``pipeline("image-classification", model=DIR)`` runs:
``config.json`` (``ViTConfig`` with ``id2label`` / ``label2id``),
``model.safetensors`` in the names of the files on the Hub
(``vit.encoder.layer.N.attention.attention.query``, which every transformers
version reads; ``vitlab.weights.layouts`` reads them back) and
``preprocessor_config.json``.

The inverse of vitlab's Hugging Face key map: ``qkv`` is split into query, key
and value; ``head`` is ``classifier``. The position embedding is the table the
model adds at its input size (a 'learned_2d' or 'sincos' table put together,
zeros for 'none'), as HF's ViT always holds a learned 1-D table.

HF's image processor converts every image to RGB. A one-channel (grey) model
is therefore written with three-channel patch filters, the one-channel filter
divided by 3 on each, and its mean and std repeated: a grey image, converted
to three equal channels, gives the same logits. The preprocessing is vitlab's
(``BitImageProcessor``: shorter side resized to the input size, bilinear, then
a centre crop; pixels / 255, then mean and std).

Refused (``refusal``), since ``ViTForImageClassification`` cannot represent
them: fc_norm, layer scale, average pooling or no class token, a relative
position bias, a distillation token, a representation layer, the hybrid's
ResNet stem, VT-ResNets and ResNets.
"""

from __future__ import annotations

import json

import torch

from .source import Source
from .vit import position_table, vit_options


def refusal(src: Source) -> str | None:
    """What of the source HF's ViTForImageClassification cannot represent, or None."""
    o = vit_options(src)
    if o is None:
        what = {"resnet": "a ResNet", "vt": "a VT-ResNet"}.get(src.family, f"the model {src.name!r}")
        return f"{what} (Hugging Face's ViTForImageClassification is a plain ViT)"
    for bad, what in ((o.conv_stem, "a convolutional stem"), (o.hybrid, "a hybrid's ResNet stem"),
                      (o.fc_norm, "fc_norm"),
                      (o.layer_scale is not None, "layer scale"),
                      (o.pool != "cls", "average pooling (pool='avg')"),
                      (not o.class_token, "a model without a class token"),
                      (o.pos_embed == "relative", "a relative position bias (pos_embed='relative')"),
                      (o.distilled, "a distillation token"),
                      (o.representation, "a representation layer (representation_size)")):
        if bad:
            return f"{what} (Hugging Face's ViTForImageClassification has none)"
    return None


def _size(hw: tuple[int, int]) -> int | list[int]:
    return hw[0] if hw[0] == hw[1] else list(hw)


@torch.no_grad()
def build(src: Source) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(the state dict in HF's names, config.json, preprocessor_config.json) of a source
    ``refusal`` accepts."""
    o = vit_options(src)
    sd = src.model.state_dict()
    d = o.embed_dim
    out: dict[str, torch.Tensor] = {}
    e = "vit.embeddings."
    patch_w = sd["patch_embed.proj.weight"]
    mean, std = list(src.mean), list(src.std)
    if src.in_chans == 1:  # HF converts images to RGB: equal channels, each with a third of the filter
        patch_w = patch_w.repeat(1, 3, 1, 1) / 3
        mean, std = mean * 3, std * 3
        src.notes.append("one-channel model written with three-channel patch filters (each a third of the "
                         "grey filter) and its mean and std repeated: grey images give the same logits")
    out[e + "cls_token"] = sd["cls_token"]
    out[e + "position_embeddings"] = position_table(src.model)
    out[e + "patch_embeddings.projection.weight"] = patch_w
    out[e + "patch_embeddings.projection.bias"] = sd["patch_embed.proj.bias"]
    for i in range(o.depth):
        s, t = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        for w in ("weight", "bias"):
            out[t + f"layernorm_before.{w}"] = sd[s + f"norm1.{w}"]
            for name, part in zip(("query", "key", "value"), sd[s + f"attn.qkv.{w}"].split(d, dim=0)):
                out[t + f"attention.attention.{name}.{w}"] = part
            out[t + f"attention.output.dense.{w}"] = sd[s + f"attn.proj.{w}"]
            out[t + f"layernorm_after.{w}"] = sd[s + f"norm2.{w}"]
            out[t + f"intermediate.dense.{w}"] = sd[s + f"mlp.fc1.{w}"]
            out[t + f"output.dense.{w}"] = sd[s + f"mlp.fc2.{w}"]
    for w in ("weight", "bias"):
        out[f"vit.layernorm.{w}"] = sd[f"norm.{w}"]
        out[f"classifier.{w}"] = sd[f"head.{w}"]
    out = {k: v.detach().float().contiguous().clone() for k, v in out.items()}
    labels = {str(i): c for i, c in enumerate(src.classes)}
    config = {
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": d,
        "num_hidden_layers": o.depth,
        "num_attention_heads": o.num_heads,
        "intermediate_size": o.mlp_dim,
        "hidden_act": "gelu",  # exact (erf) GELU, as vitlab's
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": 1e-6,
        "image_size": _size(o.img_size),
        "patch_size": _size(o.patch_size),
        "num_channels": 3,
        "qkv_bias": True,
        "encoder_stride": o.patch_size[0],
        "id2label": labels,
        "label2id": {c: int(i) for i, c in labels.items()},
        "dtype": "float32",
    }
    h, w = src.size
    processor = {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": min(h, w)},
        "resample": 2,  # PIL's BILINEAR
        "do_center_crop": True,
        "crop_size": {"height": h, "width": w},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": mean,
        "image_std": std,
    }
    return out, config, processor


def json_text(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
