"""The model-adapter protocol (compatibility module): everything model-family specific lives behind it.

Algorithm code (trainers, rewards, evaluation) receives a :class:`VLMAdapter` and never asks which
family it holds. The base class lives in :mod:`prefopt.models.base`, the families and
:func:`load_adapter` in :mod:`prefopt.models.registry`; both are re-exported here.
"""

from __future__ import annotations

from prefopt.models.base import Messages, VLMAdapter, limit_pixels
from prefopt.models.registry import (
    _REGISTRY,
    adapter_class,
    adapter_for_model,
    detect_family,
    families,
    load_adapter,
    read_model_type,
    register,
)

__all__ = [
    "_REGISTRY",
    "Messages",
    "VLMAdapter",
    "adapter_class",
    "adapter_for_model",
    "detect_family",
    "families",
    "limit_pixels",
    "load_adapter",
    "read_model_type",
    "register",
]
