"""The SFT recipe: model, LoRA, data, the optional LLaVA-CoT -> four-stage rewrite, REVERSE masking fields, and
``training:`` passed through to ``transformers.TrainingArguments`` (seed defaults: lr 1e-6 cosine, 2 epochs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.config import ConfigError, _suggest, load_config
from prefopt.models.settings import LoraSettings, ModelSettings
from prefopt.training.reliability import ReliabilitySettings

CONVERSIONS = ("none", "four_stage")


@dataclass
class SFTDataSettings:
    """The ``data:`` section: a LLaVA-conversation (or LLaVA-CoT) JSON/JSONL file."""

    path: str = ""
    format: str = "llava"
    image_root: str | None = None
    convert: str = "none"  # none | four_stage (LLaVA-CoT SUMMARY/CAPTION/REASONING/CONCLUSION rewrite)
    max_samples: int | None = None
    max_bad_fraction: float = 0.01  # bad rows (missing fields, corrupt images) skipped up to this share
    max_length: int | None = None  # tokens per conversation; None: the model's max positions
    overlong: str = "truncate"  # truncate (cut the end, counted and warned) | refuse (stop naming the row)


def default_training() -> dict[str, Any]:
    """Cold-start defaults of the seed runs (SPEC 1.7)."""
    return {
        "output_dir": "runs/sft",
        "learning_rate": 1e-6,
        "num_train_epochs": 2,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,  # a float below 1 is a ratio of the total steps
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "save_strategy": "epoch",
        "report_to": "none",
    }


@dataclass
class SFTRecipe:
    """A whole ``prefopt sft`` recipe."""

    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: SFTDataSettings = field(default_factory=SFTDataSettings)
    reverse: bool = False  # REVERSE hallucination-aware labels (SPEC 4.2)
    tag_weight: float = 1.0  # loss weight of the REVERSE tag tokens (the released scripts: none, i.e. 1)
    hint_prob: float = 0.2  # REVERSE: chance a served record's question names its </UN> phrases (seed 0.2)
    reliability: ReliabilitySettings = field(default_factory=ReliabilitySettings)  # NaN/inf skips, SIGTERM
    training: dict[str, Any] = field(default_factory=dict)

    def training_args(self) -> dict[str, Any]:
        """Defaults merged with the recipe's ``training:`` values."""
        return {**default_training(), **self.training}


def validate(recipe: SFTRecipe, where: str = "config") -> SFTRecipe:
    """Check choices and that ``training:`` keys are ``TrainingArguments`` fields."""
    from transformers import TrainingArguments

    if recipe.data.convert not in CONVERSIONS:
        raise ConfigError(
            f"{where}: data.convert must be one of {list(CONVERSIONS)}, got {recipe.data.convert!r}"
        )
    if recipe.data.format != "llava":
        raise ConfigError(f"{where}: data.format must be 'llava', got {recipe.data.format!r}")
    if not 0.0 <= recipe.hint_prob <= 1.0:
        raise ConfigError(f"{where}: hint_prob must be in [0, 1], got {recipe.hint_prob}")
    known = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in recipe.training:
        if key not in known:
            raise ConfigError(
                f"{where}: training.{key} is not a TrainingArguments field{_suggest(key, known)}"
            )
    return recipe


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> SFTRecipe:
    """Load and validate an SFT recipe from YAML plus dotted overrides."""
    return validate(load_config(SFTRecipe, path, overrides), str(path) if path else "config")
