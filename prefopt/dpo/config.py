"""The recipe of ``prefopt symmpo``: model, LoRA, data, loss, reference and training sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
    """The ``loss:`` section; ``name`` picks the preset, the rest are the weights of SPEC 3."""

    name: Literal["symmpo", "dpo", "mdpo"] = "symmpo"
    beta: float = 0.1
    beta_anchor: float = 0.1  # β_2 of the anchor on (m', y'_w)
    lam: float = 0.5  # λ, weight of the symmetric pair terms (symmpo)
    gamma: float = 1e-4  # γ, margin-consistency weight (symmpo)
    eta: float = 1.0  # η, anchor weight (symmpo, mdpo)
    delta: float = 0.0  # δ, anchor offset
    mu: float = 1.0  # weight of mDPO's image-conditional term (mdpo)
    gamma_on_scaled: bool = False  # False: γ on unscaled margins, as the released SymMPO code


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
    resume: bool = True  # continue from the newest checkpoint-N of output_dir when there is one
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
