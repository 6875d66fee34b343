"""Recipe loading: YAML + dotted overrides, unknown keys and wrong types named."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from prefopt.config import ConfigError, load_config, parse_overrides, save_config, to_dict
from prefopt.models.settings import LoraSettings, ModelSettings


@dataclass
class Inner:
    lr: float = 1e-6
    steps: int = 10
    name: str | None = None
    modules: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    inner: Inner = field(default_factory=Inner)
    seed: int = 0


def test_yaml_and_overrides_merge(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# prefopt x --config r.yaml\nmodel:\n  name_or_path: m\ninner:\n  lr: 1e-5\n  steps: 3\n")
    cfg = load_config(Recipe, path, ["inner.steps=7", "lora.enabled=true", "inner.modules=[q_proj,v_proj]"])
    assert cfg.model.name_or_path == "m"
    assert cfg.inner.lr == pytest.approx(1e-5) and isinstance(cfg.inner.lr, float)
    assert cfg.inner.steps == 7
    assert cfg.lora.enabled is True
    assert cfg.inner.modules == ["q_proj", "v_proj"]


def test_int_is_accepted_for_float_and_saved_back(tmp_path):
    cfg = load_config(Recipe, None, ["inner.lr=1"])
    assert cfg.inner.lr == 1.0
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(Recipe, tmp_path / "out.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inner:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.inner: unknown key 'stepz' \(did you mean 'steps'\?\)"):
        load_config(Recipe, path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inner.steps=abc", "inner.steps: expected an integer"),
        ("inner.lr=fast", "inner.lr: expected a number"),
        ("lora.enabled=3", "lora.enabled: expected true or false"),
        ("inner.modules=q_proj", "inner.modules: expected a list"),
        ("inner=5", "inner: expected a mapping"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_wrong_types_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Recipe, None, [override])


def test_missing_and_non_mapping_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(Recipe, tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Recipe, bad)


def test_parse_overrides_nests():
    assert parse_overrides(["a.b.c=1", "a.d=x", "e="]) == {"a": {"b": {"c": 1}, "d": "x"}, "e": ""}
