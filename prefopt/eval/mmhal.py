"""MMHal-Bench (Sun et al., 2023): an LLM judge rates each answer 0-6 against the image contents
and the standard answer.

Data: MMHal's 96-record ``response_template.json`` (``question_type, question_topic, image_id,
image_src, image_content, question, gt_answer, model_answer``), in its official order.  The image
is ``image`` when present, else the file name of ``image_src`` (looked up under ``--image-root``).
Score only: ``--predictions`` = that template with the model's answers in ``model_answer`` (or
prefopt's ``predictions.jsonl`` with ``text``).

The judge is any OpenAI-compatible chat endpoint (``--judge-url``, ``--judge-model``, key from the
environment variable ``--judge-api-key-env``), asked with the official prompt (in-context examples
and all) as a single user message.  Its reply is read by ``--scoring official`` (exactly one
distinct ``rating: N``, else 0, counted; per-type scores by position, so the 96 questions must be
in the official order -- checked before any judge call) or ``robust`` (last ``Rating: N``,
unreadable replies left out); see :mod:`prefopt.eval.mmhal_scoring`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefopt.errors import DataError, PrefoptError
from prefopt.eval.bootstrap import bootstrap, by_category
from prefopt.eval.common import Benchmark, EvalItem, EvalOptions, first, item_id, read_records
from prefopt.eval.judging import ask_judge
from prefopt.eval.mmhal_scoring import (
    check_official_order,
    judge_prompt,
    rating_metrics,
    rating_robust,
    score_mmhal,
)

# the official script sets no token limit; an explanation plus the rating needs more than prefopt's default
JUDGE_MAX_TOKENS = 1024


def parse_rating(reply: str | None) -> int | None:
    """The judge's rating 0-6 under prefopt's robust reading (see :func:`rating_robust`)."""
    return rating_robust(reply)


def mmhal_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean score and share of scores below 3, over rows that have a score."""
    return rating_metrics(rows)


class MMHal(Benchmark):
    """MMHal-Bench."""

    name = "mmhal"
    max_new_tokens = 256

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """MMHal questions."""
        items = []
        for line, row in read_records(path):
            question = first(row, ("question",), path, line)
            image = row.get("image") or str(first(row, ("image_src",), path, line)).rsplit("/", 1)[-1]
            meta = {
                "image": image,
                "question": question,
                "gt_answer": first(row, ("gt_answer",), path, line),
                "image_content": row.get("image_content", []),
                "question_type": row.get("question_type"),
            }
            items.append(EvalItem(item_id(row, line), str(question), [image], meta))
        return items

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """A record with question, standard answer, image contents and the model's answer."""
        answer = str(first(row, ("text", "model_answer"), path, line))
        return {
            "id": item_id(row, line),
            "question": str(first(row, ("question",), path, line)),
            "gt_answer": str(first(row, ("gt_answer",), path, line)),
            "answer": answer,
            "image_content": row.get("image_content") or [],
            "category": row.get("question_type"),
        }

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """Judge every answer, then the mean score and hallucination rate (overall, per type) with intervals."""
        scoring = getattr(opts, "scoring", None) or "official"
        if opts.judge is None:
            raise PrefoptError("this benchmark needs an LLM judge: give --judge-url and --judge-model")
        if scoring == "official":
            try:  # before any judge call: a misordered file would waste them all
                check_official_order([r.get("category") for r in rows])
            except ValueError as err:
                raise DataError(str(err)) from None
        prompts = [judge_prompt(r["image_content"], r["question"], r["gt_answer"], r["answer"]) for r in rows]
        judge = opts.judge
        if judge.max_tokens is not None and judge.max_tokens < JUDGE_MAX_TOKENS:  # None: no cap at all
            judge = dataclasses.replace(judge, max_tokens=JUDGE_MAX_TOKENS)
        replies, stats = ask_judge(judge, prompts, [r["id"] for r in rows], out_dir=out_dir)
        typed = [{**r, "question_type": r.get("category")} for r in rows]
        items, summary = score_mmhal(typed, replies, scoring)
        kw = {"rounds": opts.rounds, "seed": opts.seed}
        return {
            "benchmark": self.name,
            **summary,
            "n_unrated": summary["n_unparsed"],
            "metrics": bootstrap(items, rating_metrics, **kw),
            "categories": by_category(items, rating_metrics, **kw),
            "judge": stats,
        }
