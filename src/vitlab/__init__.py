"""vitlab: Vision Transformers in PyTorch, from the paper to your own data."""

from .models import create_model, list_models

__version__ = "0.5.0"


def load_pretrained(model, source, **kwargs):
    """Load weights of timm, Hugging Face, Google .npz, big_vision or vitlab
    layout into ``model``; see ``vitlab.weights.load_pretrained``."""
    from .weights import load_pretrained as _load
    return _load(model, source, **kwargs)


def count_flops(model, input_shape, **kwargs):
    """Multiply-accumulates of one forward pass; see ``vitlab.flops.count_flops``."""
    from .flops import count_flops as _count
    return _count(model, input_shape, **kwargs)


__all__ = ["create_model", "list_models", "load_pretrained", "count_flops", "__version__"]
