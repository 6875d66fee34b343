"""The table of named GRPO rewards: a recipe lists ``[{name, weight, ...params}]`` over it (SPEC 1.3, 2).

Each entry is a builder ``(params, context) -> reward function`` with its parameters and their defaults; a
recipe term names an entry, gives its weight and may set the entry's parameters, nothing else::

    rewards:
      - {name: accuracy, weight: 1.0}
      - {name: format, weight: 0.1, style: four_stage}
      - {name: caption, weight: 1.0, prompt: seed, judge: {base_url: "http://127.0.0.1:8000/v1"}}

A new reward is one :func:`register_reward` call; recipes can then name it. The :class:`RewardContext` says
what the builders may depend on besides their parameters: the prompt template, whether completions are
multi-round (Ground-R1) and where the judge's answer cache goes by default.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.config import ConfigError, from_dict
from prefopt.rewards import format as fmt
from prefopt.rewards.answers import accuracy_reward
from prefopt.rewards.caption import PROMPTS, CaptionReward
from prefopt.rewards.judge import JudgeClient, JudgeConfig


def final_round(reward_fn: Callable[..., list[float]]) -> Callable[..., list[float]]:
    """A reward function applied to the last assistant turn of each multi-round completion only."""

    @functools.wraps(reward_fn)
    def wrapped(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        last = [c[-1:] if isinstance(c, list) else c for c in completions]
        return reward_fn(prompts, last, **kwargs)

    return wrapped


@dataclass(frozen=True)
class RewardContext:
    """What a reward builder may read besides its parameters."""

    template: str = "four_stage"  # the prompt template (data.template)
    multi_round: bool = False  # completions are lists of per-round assistant messages (rollout: grounded)
    cache_root: str = "."  # the judge cache defaults to <cache_root>/judge_cache


@dataclass(frozen=True)
class RewardEntry:
    """One named reward: its builder, parameter defaults and an optional parameter check."""

    name: str
    build: Callable[[dict[str, Any], RewardContext], Callable[..., list[float]]]
    params: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any], str], None] | None = None
    templates: tuple[str, ...] | None = None  # the templates it works with (None: any)


#: Reward entries by name (the recipe's ``rewards[i].name``).
REWARDS: dict[str, RewardEntry] = {}


def register_reward(name: str, params: dict[str, Any] | None = None,
                    check: Callable[[dict[str, Any], str], None] | None = None,
                    templates: tuple[str, ...] | None = None) -> Callable:
    """Decorator: register ``builder(params, context) -> reward function`` under ``name``."""

    def decorate(build: Callable) -> Callable:
        REWARDS[name] = RewardEntry(name, build, dict(params or {}), check, templates)
        return build

    return decorate


def resolve_terms(terms: list[dict[str, Any]], where: str = "config",
                  template: str | None = None) -> list[dict[str, Any]]:
    """The recipe's reward terms checked against the table, each with every parameter filled in."""
    if not isinstance(terms, list) or not terms:
        raise ConfigError(f"{where}: rewards must be a non-empty list of {{name, weight, ...}} terms")
    resolved = []
    for i, term in enumerate(terms):
        at = f"{where}: rewards[{i}]"
        if not isinstance(term, dict) or "name" not in term:
            raise ConfigError(f"{at}: expected a mapping with a name (one of {sorted(REWARDS)}), got {term!r}")
        name = term["name"]
        if name not in REWARDS:
            close = difflib.get_close_matches(str(name), list(REWARDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{at}: unknown reward {name!r}{hint}; registered: {sorted(REWARDS)}")
        entry = REWARDS[name]
        weight = term.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"{at}.weight: expected a number, got {weight!r}")
        params = {k: v for k, v in term.items() if k not in ("name", "weight")}
        unknown = sorted(set(params) - set(entry.params))
        if unknown:
            raise ConfigError(f"{at}: {name} has no parameter {unknown[0]!r}; it takes {sorted(entry.params)}")
        if template is not None and entry.templates is not None and template not in entry.templates:
            raise ConfigError(f"{at}: the {name} reward needs data.template in {list(entry.templates)}, "
                              f"got {template!r}")
        params = {**entry.params, **params}
        if entry.check is not None:
            entry.check(params, f"{at} ({name})")
        resolved.append({"name": name, "weight": float(weight), **params})
    return resolved


def build_rewards(terms: list[dict[str, Any]], context: RewardContext,
                  where: str = "config") -> tuple[list[Callable[..., list[float]]], list[float]]:
    """The reward functions and weights of ``terms`` (TRL's ``reward_funcs`` and ``reward_weights``)."""
    funcs, weights = [], []
    for term in resolve_terms(terms, where):
        params = {k: v for k, v in term.items() if k not in ("name", "weight")}
        funcs.append(REWARDS[term["name"]].build(params, context))
        weights.append(term["weight"])
    return funcs, weights


# --- the built-in rewards ----------------------------------------------------------------------------------

FORMAT_STYLES = {
    "four_stage": fmt.four_stage_format_reward,
    "r1": fmt.r1_format_reward,
    "grounded": fmt.grounded_format_reward,  # 2 · mean per-round format (SPEC 2)
}


@register_reward("accuracy")
def _accuracy(params: dict[str, Any], context: RewardContext) -> Callable[..., list[float]]:
    """The problem type's accuracy rule; on multi-round completions the final round is scored (SPEC 2)."""
    return final_round(accuracy_reward) if context.multi_round else accuracy_reward


def _check_format(params: dict[str, Any], where: str) -> None:
    if params["style"] is not None and params["style"] not in FORMAT_STYLES:
        raise ConfigError(f"{where}: style must be one of {list(FORMAT_STYLES)}, got {params['style']!r}")


@register_reward("format", params={"style": None}, check=_check_format)
def _format(params: dict[str, Any], context: RewardContext) -> Callable[..., list[float]]:
    """The format reward of ``style`` (default: the one of the prompt template)."""
    style = params["style"] or context.template
    return FORMAT_STYLES.get(style, fmt.r1_format_reward)


def judge_config_of(params: dict[str, Any], where: str = "config") -> JudgeConfig:
    """The caption term's ``judge`` mapping as a ``JudgeConfig`` (unknown keys raise ``ConfigError``)."""
    return from_dict(JudgeConfig, params.get("judge") or {}, f"{where}: judge")


def _check_caption(params: dict[str, Any], where: str) -> None:
    judge_config_of(params, where)
    if params["prompt"] not in PROMPTS:
        raise ConfigError(f"{where}: prompt must be one of {list(PROMPTS)}, got {params['prompt']!r}")


@register_reward("caption", params={"prompt": "seed", "judge": {}}, check=_check_caption,
                 templates=("four_stage", "r1"))
def _caption(params: dict[str, Any], context: RewardContext) -> Callable[..., list[float]]:
    """The caption judge's reward (an OpenAI-compatible API); its answer cache lives inside the run."""
    config = judge_config_of(params)
    if config.cache and not config.cache_dir:
        # on by default, inside the run: a resumed run (or a rerun into the folder) never pays twice
        config = dataclasses.replace(config, cache_dir=str(Path(context.cache_root) / "judge_cache"))
    return CaptionReward(JudgeClient(config), prompt=params["prompt"])
