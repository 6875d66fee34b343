"""The model-family registry: which adapter serves which ``model_type``, and which family a checkpoint is.

Built-in families are listed in :data:`BUILTIN` by name and module, so that :func:`families` (CLI
``--family`` choices, the tests' family parameters) needs no torch import; a family's module is imported
when its adapter is first asked for. Another package adds a family with :func:`register`. A new family is
one module under ``prefopt/models/`` plus a line in :data:`BUILTIN`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefopt.cost import watch
from prefopt.errors import ModelError
from prefopt.models.loading import is_path_like, read_model_type

if TYPE_CHECKING:
    from prefopt.models.base import VLMAdapter

#: The families shipped with prefopt (name -> ``module:Class``), in the order CLI help and tests list them.
BUILTIN: dict[str, str] = {
    "llava": "prefopt.models.llava:LlavaAdapter",
    "qwen2_5_vl": "prefopt.models.qwen2_5_vl:Qwen25VLAdapter",
    "qwen3_vl": "prefopt.models.qwen3_vl:Qwen3VLAdapter",
}

#: Family names and model types -> adapter class, for the families loaded so far.
_REGISTRY: dict[str, type[VLMAdapter]] = {}
_FAMILIES: dict[str, type[VLMAdapter]] = {}
_MODEL_TYPES: dict[str, type[VLMAdapter]] = {}


def register(cls: type[VLMAdapter]) -> type[VLMAdapter]:
    """Class decorator: make an adapter available under its ``family`` and ``model_types``."""
    _FAMILIES[cls.family] = cls
    _REGISTRY[cls.family] = cls
    for model_type in cls.model_types:
        _MODEL_TYPES[model_type] = cls
        _REGISTRY[model_type] = cls
    return cls


def _load_builtin(name: str) -> type[VLMAdapter]:
    module, _, attr = BUILTIN[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if cls.family != name:
        raise ModelError(f"{BUILTIN[name]} declares family {cls.family!r}, registered as {name!r}")
    return register(cls)


def _load_all() -> None:
    for name in BUILTIN:
        if name not in _FAMILIES:
            _load_builtin(name)


def families() -> tuple[str, ...]:
    """Names of the known families, built-ins first (imports no model code)."""
    return tuple(dict.fromkeys([*BUILTIN, *_FAMILIES]))


def adapter_class(family: str) -> type[VLMAdapter]:
    """The adapter class registered for ``family`` (a family name or a ``model_type``)."""
    if family in BUILTIN and family not in _FAMILIES:
        return _load_builtin(family)
    if family not in _REGISTRY:
        _load_all()
    cls = _REGISTRY.get(family)
    if cls is None:
        raise ModelError(f"unknown model family '{family}'; choose one of {sorted(families())}")
    return cls


def detect_family(name_or_path: str) -> str:
    """The adapter family of a local checkpoint (from ``config.json``) or of a hub id (from its name)."""
    _load_all()
    path = Path(name_or_path)
    if path.is_dir():
        model_type = read_model_type(path)
        if model_type not in _MODEL_TYPES:
            raise ModelError(
                f"{path}: model_type '{model_type}' is not supported; prefopt supports {sorted(families())}"
            )
        return _MODEL_TYPES[model_type].family
    if is_path_like(name_or_path):
        # a path, not a hub id (owner/name): say it is missing rather than guess a family from its name
        raise ModelError(f"{name_or_path}: model directory does not exist")
    lowered = name_or_path.lower()
    # longest pattern first, so that a more specific family name wins over a prefix of it
    patterns = sorted(
        ((p, cls) for cls in _FAMILIES.values() for p in cls.hub_name_patterns), key=lambda pc: -len(pc[0])
    )
    for pattern, cls in patterns:
        if pattern in lowered:
            return cls.family
    raise ModelError(
        f"cannot tell the model family of '{name_or_path}': not a local directory and the name matches no "
        f"supported family ({sorted(families())}); pass --family"
    )


def adapter_for_model(model: Any) -> type[VLMAdapter]:
    """The adapter class of a loaded model (by its ``config.model_type``; PEFT/DDP wrappers are fine)."""
    return adapter_class(model.config.model_type)


def load_adapter(name_or_path: str, family: str | None = None, **kwargs: Any) -> VLMAdapter:
    """Load a model + processor through the adapter of its family (detected when not given)."""

    cls = adapter_class(family or detect_family(str(name_or_path)))
    adapter = cls.load(str(name_or_path), **kwargs)
    watch(adapter.model)  # its forward tokens count in cost.json of the stage that runs it
    return adapter
