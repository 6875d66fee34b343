"""Asking the LLM judge about many answers at once, keeping every exchange in ``judgements.jsonl``."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.errors import PrefoptError
from prefopt.rewards.judge import JudgeClient

logger = logging.getLogger(__name__)

JUDGEMENTS = "judgements.jsonl"


def ask_judge(
    judge_config: Any,
    prompts: Sequence[str],
    ids: Sequence[str],
    *,
    system: str | None = None,
    out_dir: Path | None = None,
) -> tuple[list[str | None], dict[str, Any]]:
    """Judge answers (None where the call failed) and the client's call statistics."""
    if judge_config is None:
        raise PrefoptError("this benchmark needs an LLM judge: give --judge-url and --judge-model")

    if out_dir is not None and not judge_config.cache_dir:
        # re-scoring the same answers (a resumed or repeated run) reuses the verdicts instead of paying again
        judge_config = dataclasses.replace(judge_config, cache_dir=str(out_dir / "judge_cache"))
    client = JudgeClient(judge_config)
    replies = client.ask_many(list(prompts), system=system)
    stats = dict(client.stats())
    failed = sum(r is None for r in replies)
    if failed:
        logger.warning("the judge gave no answer for %d of %d questions", failed, len(replies))
    if out_dir is not None:
        with (out_dir / JUDGEMENTS).open("w", encoding="utf-8") as fh:
            for rid, prompt, reply in zip(ids, prompts, replies, strict=True):
                fh.write(json.dumps({"id": rid, "prompt": prompt, "reply": reply}, ensure_ascii=False) + "\n")
    return replies, stats
