"""The reference a vitlab model is timed against, with the same weights.

timm's ``VisionTransformer`` (DeiT's ``VisionTransformerDistilled`` for a distilled ViT) for
the ViT family, built from the vitlab model's options (``timm_kwargs``); torchvision's ResNet
of the same depth for the ResNets. The VT-ResNets and the hybrids have no counterpart. The
weights are the reference's, copied into vitlab's model, and both must give the same logits
in fp32 (``check_same_logits``; a difference over ``TOLERANCE`` raises ``OutputMismatch``).

timm is a reference, never a runtime dependency: it (and torchvision's ResNets) are imported
inside the functions that build a reference.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from ..errors import UserError

# max |logit difference| allowed between vitlab and the reference (same weights, fp32, TF32 off),
# relative to max(1, max |logit|)
TOLERANCE = 1e-4


class OutputMismatch(RuntimeError):
    """vitlab's model and its reference give different logits with the same weights (a bug)."""


class Reference(NamedTuple):
    """A reference implementation: its library ('timm'), its class's full name, the model."""
    library: str
    class_name: str
    model: nn.Module


def timm_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of timm's ``VisionTransformer`` for the architecture of a vitlab ViT,
    given its resolved options (``model.model_args``). Raises UserError for an option timm's
    model does not have."""
    pos = args.get("pos_embed", "learned")
    if pos not in ("learned", "none"):
        raise UserError(f"timm's VisionTransformer has no pos_embed={pos!r} (it has 'learned' and 'none'), so "
                        "there is nothing to compare with; use pos_embed=learned or none")
    if args.get("representation_size"):
        raise UserError("timm's VisionTransformer has no representation layer (representation_size), so there is "
                        "nothing to compare with; leave representation_size unset")
    dim, hidden = int(args["embed_dim"]), int(args["mlp_dim"])
    ratio = hidden / dim
    if int(dim * ratio) != hidden:  # timm sizes the MLP as int(dim * mlp_ratio): keep clear of rounding down
        ratio = (hidden + 0.5) / dim
    pool = args.get("pool", "cls")
    class_token = args.get("class_token")
    class_token = pool == "cls" if class_token is None else bool(class_token)
    size = args["img_size"]
    patch = args["patch_size"]
    dropout = float(args.get("dropout", 0.0))
    return dict(
        img_size=tuple(size) if isinstance(size, (tuple, list)) else size,
        patch_size=tuple(patch) if isinstance(patch, (tuple, list)) else patch,
        in_chans=args.get("in_chans", 3), num_classes=args["num_classes"], embed_dim=dim,
        depth=args["depth"], num_heads=args["num_heads"], mlp_ratio=ratio,
        global_pool="token" if pool == "cls" else "avg", class_token=class_token,
        fc_norm=bool(args.get("fc_norm", False)), pos_embed="learn" if pos == "learned" else "none",
        init_values=args.get("layer_scale"),
        # vitlab's dropout acts after the embeddings and in the MLP and attention outputs: timm's
        # pos_drop_rate and proj_drop_rate; timm's drop_rate (on the head) has no vitlab counterpart
        pos_drop_rate=dropout, proj_drop_rate=dropout, attn_drop_rate=float(args.get("attn_dropout", 0.0)),
        drop_path_rate=float(args.get("drop_path", 0.0)))


def timm_twin(args: dict[str, Any]) -> nn.Module:
    """timm's ViT (DeiT's distilled ViT with ``distilled``) with the architecture of a vitlab ViT."""
    kwargs = timm_kwargs(args)  # an option timm lacks fails before timm is imported
    _import_timm()
    if args.get("distilled"):
        from timm.models.deit import VisionTransformerDistilled
        return VisionTransformerDistilled(**kwargs)
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(**kwargs)


def torchvision_twin(name: str, args: dict[str, Any]) -> nn.Module | None:
    """torchvision's ResNet of the depth in ``name`` ('resnet50'), with vitlab's stem changes
    ('cifar': a 3x3 stride-1 convolution and no max-pool; other input channel counts);
    None for a name that gives no depth."""
    match = re.fullmatch(r"resnet(\d+)", name)
    if not match:
        return None
    from torchvision.models import resnet as tv

    builder = getattr(tv, f"resnet{match.group(1)}", None)
    if builder is None:
        return None
    net = builder(num_classes=args["num_classes"])
    in_chans = args.get("in_chans", 3)
    if args.get("stem", "imagenet") == "cifar":
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def _import_timm():
    try:
        import timm
    except ImportError:
        raise UserError("timm is not installed, and vitlab bench compares a ViT with timm's: "
                        "pip install timm") from None
    return timm


def reference_model(name: str, family: str, args: dict[str, Any]) -> Reference | None:
    """The reference implementation of the registered model ``name``, or None where there is none."""
    if family == "vit":
        net = timm_twin(args)
        return Reference("timm", f"{type(net).__module__}.{type(net).__name__}", net)
    if family == "resnet":
        net = torchvision_twin(name, args)
        if net is not None:
            return Reference("torchvision", f"torchvision.models.{name}", net)
    return None


def same_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy the reference's weights (its own initialisation: a non-zero head) into vitlab's model.
    Parameter names are the same in both (vitlab follows timm's and torchvision's)."""
    ours.load_state_dict(theirs.state_dict(), strict=True)


def twin_models(name: str, family: str, args: dict[str, Any],
                build: Callable[[], nn.Module]) -> tuple[nn.Module, Reference | None]:
    """vitlab's model (``build()``) and its reference (None where there is none), the reference
    built first and its weights copied into vitlab's model."""
    ref = reference_model(name, family, args)
    ours = build()
    if ref is not None:
        same_weights(ours, ref.model)
    return ours, ref


@contextlib.contextmanager
def _no_tf32():
    """fp32 convolutions and matmuls on the GPU without TF32 (the output check is in exact fp32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def logit_difference(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |logit difference|, max |logit| of the reference), eval mode, fp32."""
    ours.eval()
    theirs.eval()
    with torch.no_grad(), _no_tf32():
        a, b = ours(x).float(), theirs(x).float()
    return (a - b).abs().max().item(), b.abs().max().item()


def check_same_logits(name: str, ours: nn.Module, ref: Reference, x: torch.Tensor) -> tuple[float, float]:
    """``logit_difference`` of vitlab's model ``name`` and its reference (already on ``x``'s device);
    OutputMismatch when the difference is over ``TOLERANCE`` x max(1, max |logit|) or not a number."""
    diff, scale = logit_difference(ours, ref.model, x)
    if not diff <= TOLERANCE * max(1.0, scale):  # also catches NaN
        raise OutputMismatch(
            f"{name} in vitlab and {ref.library}'s {ref.class_name} give different logits with the same weights: "
            f"max |difference| {diff:.3g} over the tolerance {TOLERANCE:g} x max(1, max |logit| "
            f"{scale:.3g}); the benchmark would compare different computations")
    return diff, scale
