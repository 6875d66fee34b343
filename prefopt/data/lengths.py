"""Prompt lengths against the model's positions, checked before training or generation starts.

A 42k-token prompt on a 4096-position model used to train and generate with no word. The check counts the
text tokens of each prompt (a lower bound: image tokens come on top), compares them with the model's
``max_position_embeddings`` minus what the run still needs (GRPO: ``max_completion_length``; preference
training: the longer response), and then, as the recipe's ``data.overlong`` says:

- ``truncate`` (default): an over-long prompt cannot be cut without cutting its question (or its image), so
  its row is skipped and counted like any bad row (:mod:`prefopt.data.bad_rows`);
- ``refuse``: the first over-long row stops the run, naming file and row.

SFT conversations are cut exactly at ``data.max_length`` by the collator instead
(:class:`prefopt.sft.collator.ConversationCollator`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefopt.errors import DataError

POLICIES = ("truncate", "refuse")


class RefusedRow(DataError):
    """A row that must stop the run rather than be skipped (``data.overlong: refuse``)."""


def max_positions_of(config: Any) -> int | None:
    """``max_position_embeddings`` of a model config's text part (None when it does not say)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if value else None


def _text_parts(messages: list[dict[str, Any]]) -> str:
    from prefopt.data.schema import message_text

    return "\n".join(message_text(m) for m in messages)


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_text(example: Any) -> tuple[str, str]:
    """``(prompt text, longest response text)`` of a prompt, conversation or preference record."""
    if hasattr(example, "chosen"):
        responses = [example.chosen, example.rejected, example.contrastive_chosen or ""]
        return example.question, max(responses, key=len)
    if isinstance(example, dict):  # ``prefopt generate`` items
        return _text_parts(list(example.get("messages") or [])), ""
    messages = list(getattr(example, "messages", []) or [])
    return _text_parts(messages), ""


def length_check(
    tokenizer: Any, positions: int | None, reserve: int = 0, policy: str = "truncate", what: str = "prompt",
    option: str = "data.overlong",
) -> Callable[[Any], None] | None:
    """A per-example check for :meth:`BadRows.screen` (None when the model's positions are unknown)."""
    from prefopt.config import ConfigError

    if policy not in POLICIES:
        raise ConfigError(f"{option} must be one of {list(POLICIES)}, got {policy!r}")
    if not positions:
        return None
    limit = positions - reserve
    if limit < 1:
        raise ConfigError(f"the model has {positions} positions, fewer than the {reserve} the run reserves "
                          "for its completions; lower max_completion_length")

    def check(example: Any) -> None:
        prompt, response = prompt_text(example)
        n = count_tokens(tokenizer, prompt) + (count_tokens(tokenizer, response) if response else 0)
        if n <= limit:
            return
        room = f"{positions} positions" + (f" minus {reserve} reserved" if reserve else "")
        message = f"{what} has at least {n} text tokens, more than the model's {room} ({limit})"
        if policy == "refuse":
            raise RefusedRow(f"{message}; {option}=refuse (truncate skips such rows and counts them)")
        raise DataError(f"{message}; skipped (an over-long prompt cannot be cut without cutting its question)")

    return check


def model_length_check(
    name_or_path: str, reserve: int = 0, policy: str = "truncate", what: str = "prompt",
    trust_remote_code: bool = False,
) -> Callable[[Any], None] | None:
    """:func:`length_check` with the tokenizer and positions read from a model folder (no weights loaded)."""
    from pathlib import Path

    from transformers import AutoConfig, AutoTokenizer

    if not name_or_path or (not Path(name_or_path).is_dir() and name_or_path.count("/") != 1):
        return None  # neither a model folder nor a hub id: the model load reports it
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001  (advisory: the model load that follows reports an unusable folder properly)
        return None
    return length_check(tokenizer, max_positions_of(config), reserve, policy, what)
