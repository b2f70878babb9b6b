"""Model definitions and the registry."""

from .registry import create_model, list_models, model_defaults, model_description, register
from .vit import VisionTransformer

__all__ = ["create_model", "list_models", "model_defaults", "model_description", "register",
           "VisionTransformer"]
