"""Backbones by name, their weights and their preprocessing."""

import transferlab.models.custom  # noqa: F401  (registers the custom CNNs in timm)
from transferlab.models.registry import (
    ModelInfo,
    create_model,
    list_models,
    resolve_preprocessing,
)
from transferlab.models.weights import PACKAGED_WEIGHTS, has_offline_weights

__all__ = [
    "PACKAGED_WEIGHTS",
    "ModelInfo",
    "create_model",
    "has_offline_weights",
    "list_models",
    "resolve_preprocessing",
]
