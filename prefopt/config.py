"""Dataclass configs loaded from YAML recipes with dotted command-line overrides.

A recipe is a YAML mapping whose keys are the fields of a (possibly nested) dataclass.
Overrides are ``section.key=value`` strings; each value is parsed as YAML so that
``training.learning_rate=1e-5`` gives a float and ``lora.target_modules=[q_proj,v_proj]`` a list.
Unknown keys and values of the wrong type raise :class:`ConfigError` naming the file and key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from prefopt.errors import PrefoptError

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "check_fields",
    "from_dict",
    "load_config",
    "parse_overrides",
    "safe_load",
    "save_config",
    "to_dict",
]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats: ``1e-5`` is a number (YAML 1.1 wants ``1.0e-5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """Parse YAML safely, reading ``1e-5`` (and every other float spelling) as a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


class ConfigError(PrefoptError, ValueError):
    """A recipe or override that does not fit its config class."""


def _suggest(key: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert ints to floats and dicts to dataclasses."""
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:  # `SchedulerType | str`: a string must still name one of the enum's values
            if isinstance(arg, type) and issubclass(arg, enum.Enum) and isinstance(value, str):
                return _coerce(value, arg, where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:  # `int | None`: the one real type says best what was expected
            raise errors[0]
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, str) and origin is None:
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        return _as_int(value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = [m.value for m in tp]
        if isinstance(value, tp):
            return value.value
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
        return value
    return value  # complex annotations (callables, classes) are left to the class itself


def _as_int(value: Any, where: str) -> int:
    """An integer from an int, an integral float (``1e3``) or a string spelling one."""
    if isinstance(value, str):
        try:
            value = float(value) if re.search(r"[.eE]", value) else int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def check_fields(values: Mapping[str, Any], cls: type, where: str, section: str = "training") -> dict[str, Any]:
    """Type-check a pass-through mapping against dataclass ``cls`` (e.g. TRL's ``GRPOConfig``); coerced copy.

    The annotations of the third-party class are the schema, so every field it has is checked without a
    hand-kept list, and ``learning_rate: "1e-5"`` becomes a float before it reaches the trainer.
    """
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable forward references: check names only
        hints = {}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: {section}.{key} is not a {cls.__name__} field{_suggest(str(key), fields)}")
        out[key] = _coerce(value, hints.get(key, Any), f"{where}: {section}.{key}")
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # forward references from third-party classes
        hints = {name: f.type for name, f in fields.items()}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{_suggest(str(key), fields)}")
        kwargs[key] = _coerce(value, hints.get(key, Any), f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into the nested mapping ``{"a": {"b": 1}, "c": "x"}``."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': the value is not valid YAML ({err.__class__.__name__})") from err
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from a YAML recipe (optional) merged with dotted overrides."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        try:
            loaded = safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: the recipe must be a mapping of keys to values")
        data = dict(loaded)
    data = _merge(data, parse_overrides(overrides))
    return from_dict(cls, data, where)


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (dataclasses, lists, dicts) for saving next to a run."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and hasattr(type(obj), "__members__"):  # enums
        return obj.value
    return obj


def save_config(obj: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (it never holds secrets: keys are read from the environment)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


#: Ranges of the common TrainingArguments / TRL fields: (test, what the value must be).
_RANGES: dict[str, tuple[Any, str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "per_device_train_batch_size": (lambda v: v >= 1, ">= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "num_train_epochs": (lambda v: v > 0, "> 0"),
    "max_steps": (lambda v: v == -1 or v >= 1, "-1 (use num_train_epochs) or >= 1"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v >= 0, ">= 0"),
    "logging_steps": (lambda v: v > 0, "> 0"),
    "save_steps": (lambda v: v > 0, "> 0"),
    "save_total_limit": (lambda v: v is None or v >= 1, ">= 1"),
    "dataloader_num_workers": (lambda v: v >= 0, ">= 0"),
    # TRL (GRPO / DPO)
    "num_generations": (lambda v: v is None or v >= 2, ">= 2 (a group needs two completions to compare)"),
    "beta": (lambda v: v >= 0, ">= 0"),
    "temperature": (lambda v: v > 0, "> 0"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "max_completion_length": (lambda v: v is None or v >= 1, ">= 1"),
    "max_prompt_length": (lambda v: v is None or v >= 1, ">= 1"),
    "max_length": (lambda v: v is None or v >= 1, ">= 1"),
}


def check_ranges(values: Mapping[str, Any], where: str, section: str = "training") -> None:
    """Refuse out-of-range values of the common training fields (lr > 0, batch >= 1, ...), naming the key."""
    for key, (ok, must) in _RANGES.items():
        if key not in values or not isinstance(values[key], int | float) or isinstance(values[key], bool):
            continue
        if not ok(values[key]):
            raise ConfigError(f"{where}: {section}.{key} must be {must}, got {values[key]!r}")
