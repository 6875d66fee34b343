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
    "grounded_format",
    "grounded_format_reward",
]

FOUR_STAGE_TAGS = ("prethink", "caption", "think", "answer")
R1_TAGS = ("think", "answer")

FOUR_STAGE_PATTERN = re.compile(
    r"<prethink>.*?</prethink>\s*<caption>.*?</caption>\s*<think>.*?</think>\s*<answer>.*?</answer>",
    re.DOTALL,
)
R1_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_COORD = r"\s*\d+(?:\.\d+)?\s*"
#: A non-final Ground-R1 round (SPEC 2): reasoning, then one box of four non-negative numbers.
BOX_ROUND_PATTERN = re.compile(
    rf"<think>.*?</think>\s*<box>\s*\[{_COORD},{_COORD},{_COORD},{_COORD}\]\s*</box>", re.DOTALL
)
BOX_ROUND_TAGS = ("think", "box")


def _matches(text: str, pattern: re.Pattern[str], tags: Sequence[str], think_needed: bool = False) -> float:
    text = text.strip()
    if any(count_tag(text, tag) != (1, 1) for tag in tags):
        return 0.0
    if "answer" in tags and not extract_tag(text, "answer"):
        return 0.0
    if think_needed and not extract_tag(text, "think"):
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


def _turn_texts(completion: Any) -> list[str]:
    """One text per assistant turn (a plain string is a single turn)."""
    if isinstance(completion, (list, tuple)):
        turns = [t for t in completion if isinstance(t, dict) and t.get("role", "assistant") == "assistant"]
        return [completion_text(t) for t in turns]
    return [completion_text(completion)]


def grounded_format(completion: Any) -> float:
    """Ground-R1's multi-round format score: 2 · mean over rounds of the per-round full match (SPEC 2).

    Rounds before the last must be ``<think>…</think><box>[x1,y1,x2,y2]</box>``; the last round must be
    ``<think>…</think><answer>…</answer>``; each tag exactly once per round, as in :func:`r1_format`.
    A round whose ``<think>`` is empty or only whitespace is no match (the seed's ``<think>(.+?)</think>``
    asks for reasoning in every round).
    """
    rounds = _turn_texts(completion)
    if not rounds:
        return 0.0
    scores = [_matches(text, BOX_ROUND_PATTERN, BOX_ROUND_TAGS, think_needed=True) for text in rounds[:-1]]
    scores.append(_matches(rounds[-1], R1_PATTERN, R1_TAGS, think_needed=True))
    return 2.0 * sum(scores) / len(scores)


def grounded_format_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: :func:`grounded_format` of each multi-round completion (one message per round)."""
    return [grounded_format(c) for c in completions]


four_stage_format_reward.__name__ = "format"
r1_format_reward.__name__ = "format"
grounded_format_reward.__name__ = "format"
