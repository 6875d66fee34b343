"""Text helpers shared by the reward functions: completion text, tag extraction, answer extraction."""

from __future__ import annotations

import re
from typing import Any

_TAG_CACHE: dict[str, re.Pattern[str]] = {}


def _tag_pattern(tag: str) -> re.Pattern[str]:
    if tag not in _TAG_CACHE:
        _TAG_CACHE[tag] = re.compile(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", re.DOTALL)
    return _TAG_CACHE[tag]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of ``{"role", "content"}`` turns.

    Content may itself be a string or a list of ``{"type": "text", "text": ...}`` parts; the text of all
    assistant turns is joined (a conversational completion normally holds exactly one).
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        turns = [t for t in completion if isinstance(t, dict)]
        assistant = [t for t in turns if t.get("role", "assistant") == "assistant"] or turns
        return "".join(_content_text(t.get("content", "")) for t in assistant)
    raise TypeError(f"cannot read a completion of type {type(completion).__name__}")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def extract_tag(text: str, tag: str) -> str | None:
    """The stripped content of the LAST ``<tag>…</tag>`` in ``text``, or None when there is none."""
    matches = _tag_pattern(tag).findall(text or "")
    return matches[-1].strip() if matches else None


def count_tag(text: str, tag: str) -> tuple[int, int]:
    """How many opening and closing ``tag`` markers ``text`` holds."""
    text = text or ""
    return text.count(f"<{tag}>"), text.count(f"</{tag}>")


def extract_answer(text: str) -> str:
    """The answer inside the last ``<answer>…</answer>``; the whole stripped text when there is no such tag.

    For a ground truth, which may be tagged or bare. A model's completion is read with
    :func:`completion_answer` instead, which gives no answer without a complete tag.
    """
    inner = extract_tag(text, "answer")
    return (text or "").strip() if inner is None else inner


def completion_answer(text: str) -> str | None:
    """The answer inside a completion's last complete ``<answer>…</answer>``; None without one (SPEC 1.2).

    An opening tag never closed is no answer: scoring the whole text instead let a free-form completion
    holding only a ``<think>`` earn ROUGE reward for its reasoning.
    """
    return extract_tag(text, "answer")


def prompt_text(prompt: Any) -> str:
    """The text of the last user turn of a TRL prompt (string or conversational list)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [t for t in prompt if isinstance(t, dict) and t.get("role") == "user"]
        return _content_text(users[-1].get("content", "")) if users else ""
    return completion_text(prompt)


_NUMBER = re.compile(r"^[+-]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def parse_number(text: str) -> float | None:
    """A float from ``text`` (thousands commas dropped, a trailing ``%`` or ``.`` ignored), or None."""
    s = (text or "").strip().rstrip(".").rstrip("%").strip().replace(" ", "")
    if not _NUMBER.match(s):
        return None
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None
