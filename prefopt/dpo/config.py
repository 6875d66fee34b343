"""The recipe of ``prefopt symmpo``: model, LoRA, data, loss, reference and training sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from prefopt.config import ConfigError, check_fields, check_ranges, load_config
from prefopt.dpo.losses import loss_names
from prefopt.models.settings import LoraSettings, ModelSettings
from prefopt.training.reliability import ReliabilitySettings


@dataclass
class DataSettings:
    """The ``data:`` section: where the preference pairs are."""

    path: str = ""  # SymMPO parquet, or a TRL-style preference file / hub dataset (RLAIF-V layout)
    format: Literal["auto", "symmpo", "preference"] = "auto"  # auto: .parquet with resp_1_w -> symmpo
    image_root: str | None = None  # relative image paths resolve under it
    split: str = "train"  # for hub datasets
    max_examples: int | None = None  # keep the first N (smoke runs)
    max_bad_fraction: float = 0.01  # bad rows (identical pairs, missing fields, corrupt images) skipped up to this
    overlong: Literal["truncate", "refuse"] = "truncate"  # prompt + response over the positions: skip+count | stop


@dataclass
class LossSettings:
    """The ``loss:`` section; ``name`` picks a loss of the table (prefopt.dpo.losses.LOSSES), the rest are
    the weights of SPEC 3; each loss reads the fields named as its parameters."""

    name: str = "symmpo"  # a name of the loss table: prefopt.dpo.losses.loss_names()
    beta: float = 0.1
    beta_anchor: float = 0.1  # β_2 of the anchor on (m', y'_w)
    lam: float = 0.5  # λ, weight of the symmetric pair terms (symmpo)
    gamma: float = 1e-4  # γ, margin-consistency weight (symmpo)
    eta: float = 1.0  # η, anchor weight (symmpo, mdpo)
    delta: float = 0.0  # δ, anchor offset
    mu: float = 1.0  # weight of mDPO's image-conditional term (mdpo)
    gamma_on_scaled: bool = False  # False: γ on unscaled margins, as the released SymMPO code

    def __post_init__(self) -> None:
        if self.name not in loss_names():
            raise ValueError(f"unknown loss.name {self.name!r}; choose one of {list(loss_names())}")


@dataclass
class TrainingSettings:
    """The ``training:`` section: the common ``TrainingArguments`` fields, plus ``extra`` for any other."""

    output_dir: str = "runs/symmpo"
    learning_rate: float = 5e-6
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05  # share of all steps (passed as a fractional warmup_steps)
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 16
    num_train_epochs: float = 2.0
    max_steps: int = -1
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # path to a DeepSpeed JSON (ZeRO-3 in the 7B recipe)
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 42
    report_to: list[str] = field(default_factory=lambda: ["none"])
    use_cpu: bool = False
    dataloader_num_workers: int = 0
    resume: bool = False  # continue from the newest checkpoint-N of output_dir (`prefopt symmpo --resume`)
    extra: dict[str, Any] = field(default_factory=dict)  # any other TrainingArguments field


@dataclass
class SymMPOConfig:
    """A whole ``prefopt symmpo`` recipe."""

    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(enabled=False))
    data: DataSettings = field(default_factory=DataSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    # precomputed: reference log-probs computed once before training and cached next to the data;
    # online: recomputed each step (the LoRA adapter disabled, or a frozen copy without LoRA)
    reference: Literal["precomputed", "online"] = "precomputed"
    reference_model: str | None = None  # default: the initial policy (model.name_or_path)
    reference_batch_size: int = 4
    reference_cache_dir: str | None = None  # default: the dataset's folder
    # how to supply the contrastive image m' when a row has none
    contrastive: Literal["none", "similar", "corrupt"] = "none"
    contrastive_seed: int = 0
    reliability: ReliabilitySettings = field(default_factory=ReliabilitySettings)  # NaN/inf skips, SIGTERM
    training: TrainingSettings = field(default_factory=TrainingSettings)


def validate(config: SymMPOConfig, where: str = "config") -> SymMPOConfig:
    """Type-check ``training.extra`` against ``TrainingArguments`` and refuse out-of-range numbers, naming the key."""
    from transformers import TrainingArguments

    t = config.training
    t.extra = check_fields(t.extra, TrainingArguments, where, section="training.extra")
    named = {f.name for f in dataclasses.fields(TrainingSettings)} - {"extra"}
    clash = sorted(set(t.extra) & named)
    if clash:
        raise ConfigError(f"{where}: training.extra.{clash[0]} is a training field; set training.{clash[0]} instead")
    values = {f.name: getattr(t, f.name) for f in dataclasses.fields(TrainingSettings)} | t.extra
    check_ranges(values, where)
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"{where}: training.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    loss = config.loss
    for key in ("beta", "beta_anchor"):
        if getattr(loss, key) <= 0:
            raise ConfigError(f"{where}: loss.{key} must be > 0, got {getattr(loss, key)}")
    for key in ("lam", "gamma", "eta", "mu"):
        if getattr(loss, key) < 0:
            raise ConfigError(f"{where}: loss.{key} must be >= 0, got {getattr(loss, key)}")
    if config.reference_batch_size < 1:
        raise ConfigError(f"{where}: reference_batch_size must be >= 1, got {config.reference_batch_size}")
    if config.data.max_examples is not None and config.data.max_examples < 1:
        raise ConfigError(f"{where}: data.max_examples must be >= 1, got {config.data.max_examples}")
    return config


def load_recipe(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> SymMPOConfig:
    """Load and validate a SymMPO recipe from YAML plus dotted overrides."""
    return validate(load_config(SymMPOConfig, path, overrides), str(path) if path else "config")
