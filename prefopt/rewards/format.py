"""Format rewards (SPEC 1.1): 1.0 when a completion has exactly the required tag structure, else 0.0.

Departures from the seed code, both asked for by users as reward-hacking guards: every tag must appear
exactly once (the seed regex let ``<think>`` blocks nest or repeat), and an empty ``<answer></answer>``
scores 0. Surrounding whitespace of the whole completion is ignored (generations often end in a newline).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prefopt.rewards.text import completion_text, count_tag, extract_tag

__all__ = [
    "completion_text",
    "four_stage_format",
    "r1_format",
    "four_stage_format_reward",
    "r1_format_reward",
    "FOUR_STAGE_PATTERN",
    "R1_PATTERN",
]

FOUR_STAGE_TAGS = ("prethink", "caption", "think", "answer")
R1_TAGS = ("think", "answer")

FOUR_STAGE_PATTERN = re.compile(
    r"<prethink>.*?</prethink>\s*<caption>.*?</caption>\s*<think>.*?</think>\s*<answer>.*?</answer>",
    re.DOTALL,
)
R1_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


def _matches(text: str, pattern: re.Pattern[str], tags: Sequence[str]) -> float:
    text = text.strip()
    if any(count_tag(text, tag) != (1, 1) for tag in tags):
        return 0.0
    if not extract_tag(text, "answer"):
        return 0.0
    return 1.0 if pattern.fullmatch(text) else 0.0


def four_stage_format(completion: Any) -> float:
    """1.0 if the completion is exactly ``<prethink>…</prethink> <caption>…</caption> <think>…</think> <answer>…</answer>``."""
    return _matches(completion_text(completion), FOUR_STAGE_PATTERN, FOUR_STAGE_TAGS)


def r1_format(completion: Any) -> float:
    """1.0 if the completion is exactly ``<think>…</think> <answer>…</answer>``."""
    return _matches(completion_text(completion), R1_PATTERN, R1_TAGS)


def four_stage_format_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: :func:`four_stage_format` of each completion."""
    return [four_stage_format(c) for c in completions]


def r1_format_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: :func:`r1_format` of each completion."""
    return [r1_format(c) for c in completions]


four_stage_format_reward.__name__ = "format"
r1_format_reward.__name__ = "format"
