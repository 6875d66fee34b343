"""Sizes and recipes of the demo: ``default`` (about 12 minutes on one core) and ``quick`` (the CI smoke run).

Each stage's recipe is a plain dict in the layout of that subcommand's YAML; the pipeline writes it to
``OUT/recipes/<stage>.yaml`` (first line: the exact command that runs it) before running it, so every
stage can be re-run or tweaked by hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DemoProfile:
    """Everything that differs between the full demo and the quick one."""

    name: str
    world: dict[str, Any]  # prefopt.data.synthetic.WorldSizes fields
    model: dict[str, int]  # prefopt.models.tiny size overrides
    sft: dict[str, Any]
    select: dict[str, Any]  # k, keep
    grpo: dict[str, Any]
    symmpo: dict[str, Any]
    eval: dict[str, Any] = field(default_factory=dict)  # batch_size, bootstrap_rounds, max_new_tokens


def _model() -> dict[str, int]:
    return {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "vision_hidden_size": 64,
        "vision_intermediate_size": 128,
    }


def _sft(epochs: float) -> dict[str, Any]:
    # learning rate 4e-3: the best of the cold-start settings measured over seeds (docs/demo/tuning.md)
    return {
        "model": {"dtype": "float32"},
        "lora": {"enabled": False},
        "data": {"format": "llava"},
        "training": {
            "learning_rate": 4.0e-3,
            "num_train_epochs": epochs,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "per_device_train_batch_size": 16,
            "use_cpu": True,
            "save_strategy": "no",
            "logging_steps": 10,
            "report_to": "none",
            "seed": 0,
        },
    }


def _grpo(steps: int, generations: int, batch: int) -> dict[str, Any]:
    return {
        "model": {"dtype": "float32"},
        "lora": {"enabled": False},
        "data": {"format": "video_r1", "template": "four_stage"},
        "rewards": {
            "accuracy_weight": 1.0,
            "format_weight": 0.1,
            "caption": True,
            "caption_weight": 1.0,
            "judge": {"model": "shapes-judge", "max_concurrency": 8, "timeout": 10.0, "backoff": 0.1},
        },
        "ntk": {"enabled": True, "mode": "gradient"},
        "rollout": "single",
        "training": {
            "num_generations": generations,
            "per_device_train_batch_size": batch,
            "max_completion_length": 80,
            "temperature": 1.0,
            "top_p": 1.0,
            "beta": 0.04,
            "learning_rate": 3.0e-5,
            "lr_scheduler_type": "constant",
            "max_steps": steps,
            "use_cpu": True,
            "save_strategy": "steps",
            "save_steps": max(steps // 2, 1),
            "save_total_limit": 1,
            "logging_steps": 1,
            "report_to": "none",
            "seed": 0,
        },
    }


def _symmpo(epochs: float, max_steps: int = -1) -> dict[str, Any]:
    return {
        "model": {"dtype": "float32", "freeze_vision_tower": True},
        "lora": {"enabled": False},
        "data": {"format": "symmpo"},
        "loss": {"name": "symmpo", "beta": 0.1, "beta_anchor": 0.1, "lam": 0.5, "gamma": 1.0e-4, "eta": 1.0},
        "reference": "precomputed",
        "reference_batch_size": 16,
        "training": {
            "learning_rate": 2.0e-5,
            "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.05,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "num_train_epochs": epochs,
            "max_steps": max_steps,
            "logging_steps": 5,
            "save_steps": 10_000,
            "save_total_limit": 1,
            "use_cpu": True,
            "seed": 0,
        },
    }


#: How the demo makes the two methods' budgets comparable (recorded in every across-seed report).
BUDGET_RULE = (
    "equal optimizer updates: GRPO and SymMPO start from the same cold start and take the same number of "
    "optimizer steps (training.max_steps; 64 by default, 2 with --quick); what a step costs differs by "
    "method and is measured (wall/CPU seconds, forward and generated tokens, judge calls)"
)
UPDATES = {"default": 64, "quick": 2}

PROFILES: dict[str, DemoProfile] = {
    "default": DemoProfile(
        name="default",
        world={"train": 400, "grpo": 256, "preference": 160, "eval": 100, "noise": 0.6},
        model=_model(),
        sft=_sft(10),
        select={"k": 8, "keep": 0.5},
        grpo=_grpo(steps=UPDATES["default"], generations=8, batch=16),
        symmpo=_symmpo(4, max_steps=UPDATES["default"]),
        eval={"batch_size": 32, "bootstrap_rounds": 200, "max_new_tokens": 96},
    ),
    "quick": DemoProfile(
        name="quick",
        world={"train": 100, "grpo": 16, "preference": 16, "eval": 12, "noise": 0.6},
        model=_model(),
        sft=_sft(4),
        select={"k": 4, "keep": 0.5},
        grpo=_grpo(steps=UPDATES["quick"], generations=4, batch=8),
        symmpo=_symmpo(1, max_steps=UPDATES["quick"]),
        eval={"batch_size": 32, "bootstrap_rounds": 50, "max_new_tokens": 96},
    ),
}


def profile(name: str) -> DemoProfile:
    """A deep copy of the named profile (callers may edit it)."""
    return copy.deepcopy(PROFILES[name])
