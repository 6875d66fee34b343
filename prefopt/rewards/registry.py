"""Reward combinators and (see below) the table of named GRPO rewards."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def final_round(reward_fn: Callable[..., list[float]]) -> Callable[..., list[float]]:
    """A reward function applied to the last assistant turn of each multi-round completion only."""

    @functools.wraps(reward_fn)
    def wrapped(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        last = [c[-1:] if isinstance(c, list) else c for c in completions]
        return reward_fn(prompts, last, **kwargs)

    return wrapped
