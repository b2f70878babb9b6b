"""The model of a config: built for its dataset, with pretrained weights
(fine-tuning) and their normalisation convention."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..config import sized_model_args
from ..errors import UserError
from ..models import create_model


def build_model(cfg, info, weights: bool = True) -> nn.Module:
    """The model of ``cfg.model`` sized for the dataset ``info``: its channels
    and classes, and its image size unless the config sets one. A builder that
    cannot take the dataset's channels or classes was refused when the config was read.

    With ``model.pretrained`` (and ``weights``; a resumed run takes its weights
    from its checkpoint instead) the file is loaded by ``load_weights``."""
    # the name, the options and the builder's sizing were checked when the config was read
    args = sized_model_args(cfg, info.in_chans, info.num_classes, info.img_size)
    try:
        model = create_model(cfg.model.name, **args)
    except ValueError as e:
        raise UserError(f"cannot build model {cfg.model.name!r}: {e}") from None
    if cfg.model.pretrained and weights:
        load_weights(model, cfg, info)
    return model


def load_weights(model: nn.Module, cfg, info):
    """Load the file ``model.pretrained`` into ``model`` (``build_model(cfg, info,
    weights=False)``) with ``load_pretrained`` (position embeddings resampled,
    channels adapted) and, unless ``model.keep_head``, replace the head by a
    zero-initialised one. Returns the ``LoadReport``, whose ``changes`` then
    say what became of the head whatever its class count."""
    from ..weights import load_pretrained

    _, report = load_pretrained(model, cfg.model.pretrained, report=True)
    if not cfg.model.keep_head:
        model.reset_classifier(info.num_classes)
        if report.head_loaded:  # it fit, and is replaced all the same
            line = (f"head replaced: the file's {info.num_classes}-class head not kept (model.keep_head is "
                    "false), zero-initialised")
            report = replace(report, head_loaded=False, changes=report.changes + (line,))
    elif report.head_loaded and report.classes is not None and list(report.classes) != list(info.classes):
        line = (f"warning: head kept (model.keep_head) although its classes are not the data's: the file's "
                f"{_listed(report.classes)} against {_listed(info.classes)}; class i of the data takes the "
                "file's class i")
        report = replace(report, changes=report.changes + (line,))
    return report


def _listed(classes, shown: int = 5) -> str:
    names = ", ".join(list(classes)[:shown]) + (", ..." if len(classes) > shown else "")
    return f"{len(classes)} classes ({names})"


def weights_normalisation(cfg) -> str:
    """Set ``data.mean``/``data.std`` from the pretrained weights' own convention where
    it is known and the config sets none; returns a line for the log and the model card."""
    data = cfg.data
    if data.mean is not None or data.std is not None:
        return f"normalisation: data.mean={data.mean}, data.std={data.std} (from the config)"
    from ..data import DATASETS, canonical_name
    from ..weights import weights_normalisation as convention

    found = convention(cfg.model.pretrained)
    if found is None:
        return "normalisation: the dataset's own statistics (the weights' convention is not known)"
    mean, std, where = found
    spec = DATASETS[canonical_name(data.name)]
    if spec.in_chans == 1 and len(mean) > 1:  # RGB statistics, one-channel data
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    data.mean, data.std = list(mean), list(std)
    return f"normalisation: mean={list(mean)}, std={list(std)}, the weights' convention ({where})"


def is_convolutional(model: nn.Module) -> bool:
    """Models whose work is mostly convolutions (ResNets, VT-ResNets, hybrids): channels-last helps them."""
    from ..models.registry import model_family

    try:
        return model_family(model.model_name) in ("resnet", "vt", "hybrid")
    except (AttributeError, ValueError):
        return False
