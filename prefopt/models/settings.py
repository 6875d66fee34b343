"""Recipe sections shared by every trainer: which model to load and how to wrap it with LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelSettings:
    """The ``model:`` section of a recipe."""

    name_or_path: str = ""  # hub id or local directory
    family: str | None = None  # a family of prefopt.models.registry; detected from config.json when empty
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    attn_implementation: str | None = None  # sdpa | eager | flash_attention_2
    quantization: str | None = None  # None | 4bit | 8bit (QLoRA base through bitsandbytes)
    freeze_vision_tower: bool = True
    freeze_projector: bool = False
    trust_remote_code: bool = False  # off unless the user asks


@dataclass
class LoraSettings:
    """The ``lora:`` section of a recipe (LoRA is off unless ``enabled``)."""

    enabled: bool = False
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the adapter's language-model q/k/v/o/gate/up/down
    include_vision: bool = False  # also wrap the vision tower and projector
    modules_to_save: list[str] = field(default_factory=list)
    train_new_token_rows: bool = True  # make added special-token embedding rows trainable
