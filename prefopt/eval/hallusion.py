"""HallusionBench (Guan et al., 2024): yes/no questions over figure sets, some edited to contradict
common knowledge, some asked without the figure.

Data: the released json list (``category, subcategory, set_id, figure_id, question_id, question,
gt_answer`` ("1" yes / "0" no), ``gt_answer_details``, ``filename`` (null when ``visual_input`` is
"0": the question is asked without an image)).  Scoring input: the same records with the model's
answer in ``text`` (or ``model_prediction``).

Correctness: with a judge (``--judge-url``) the LLM says whether the answer agrees with the ground
truth, as the paper does; without one the answer is read with POPE's yes/no rule and compared with
``gt_answer``.  Metrics:
- aAcc: share of correct answers;
- qAcc: share of questions (category, subcategory, set_id, question_id) answered correctly for every
  figure of the set;
- fAcc: share of figures (category, subcategory, set_id, figure_id) whose questions are all correct.
Bootstrap resamples whole figure sets so both groupings stay intact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefopt.eval.bootstrap import DRAW_KEY, bootstrap, by_category, safe_div
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    first,
    item_id,
    normalize_yes_no,
    read_records,
    says_no,
)
from prefopt.eval.judging import ask_judge
from prefopt.eval.pope import SHORT_ANSWER

SYSTEM = "You check whether an answer to a yes/no question agrees with the ground truth."
TEMPLATE = """Question: {question}
Ground truth: {gt} ({details})
Answer to check: {answer}

Does the answer agree with the ground truth? Reply with one word: correct, incorrect, or uncertain."""


def judged_correct(reply: str | None) -> bool:
    """True when the judge's reply says ``correct`` (and not ``incorrect``)."""
    words = re.findall(r"[a-z]+", (reply or "").lower())
    return "correct" in words and "incorrect" not in words


def _group(row: dict[str, Any], *keys: str) -> tuple:
    return (row.get(DRAW_KEY), *(row[k] for k in keys))


def hallusion_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """aAcc, qAcc and fAcc of rows holding ``correct`` and their set/figure/question keys."""
    questions: dict[tuple, bool] = {}
    figures: dict[tuple, bool] = {}
    for r in rows:
        q = _group(r, "category", "subcategory", "set_id", "question_id")
        f = _group(r, "category", "subcategory", "set_id", "figure_id")
        questions[q] = questions.get(q, True) and r["correct"]
        figures[f] = figures.get(f, True) and r["correct"]
    return {
        "aAcc": safe_div(sum(r["correct"] for r in rows), len(rows)),
        "qAcc": safe_div(sum(questions.values()), len(questions)),
        "fAcc": safe_div(sum(figures.values()), len(figures)),
    }


class HallusionBench(Benchmark):
    """HallusionBench yes/no questions."""

    name = "hallusion"
    max_new_tokens = 64

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """Questions; rows without a figure are asked as text only."""
        items = []
        for line, row in read_records(path):
            meta = self._keys(row, path, line)
            meta["filename"] = row.get("filename")
            images = [row["filename"]] if row.get("filename") else []
            rid = "_".join(
                str(meta[k]) for k in ("category", "subcategory", "set_id", "figure_id", "question_id")
            )
            items.append(EvalItem(rid, f"{meta['question']}\n{SHORT_ANSWER}", images, meta))
        return items

    def _keys(self, row: dict[str, Any], path: str | Path, line: int) -> dict[str, Any]:
        keys = {
            k: str(first(row, (k,), path, line))
            for k in ("category", "subcategory", "set_id", "figure_id", "question_id", "question")
        }
        keys["gt_answer"] = normalize_yes_no(first(row, ("gt_answer",), path, line), path, line)
        keys["gt_answer_details"] = str(row.get("gt_answer_details") or "")
        return keys

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """A record with the grouping keys, ground truth and the model's answer."""
        parsed = self._keys(row, path, line)
        parsed["answer"] = str(first(row, ("text", "model_prediction"), path, line))
        parsed["id"] = item_id(row, line, ("id",))
        return parsed

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """Mark each answer correct (judge or yes/no rule), then aAcc/qAcc/fAcc with intervals."""
        result: dict[str, Any] = {"benchmark": self.name, "n": len(rows)}
        if opts.judge is not None:
            prompts = [
                TEMPLATE.format(
                    question=r["question"],
                    gt=r["gt_answer"],
                    details=r["gt_answer_details"],
                    answer=r["answer"],
                )
                for r in rows
            ]
            replies, result["judge"] = ask_judge(
                opts.judge, prompts, [r["id"] for r in rows], system=SYSTEM, out_dir=out_dir
            )
            for row, reply in zip(rows, replies, strict=True):
                row["correct"] = judged_correct(reply)
        else:
            for row in rows:
                row["correct"] = ("no" if says_no(row["answer"]) else "yes") == row["gt_answer"]
        kw = {
            "rounds": opts.rounds,
            "seed": opts.seed,
            "group": lambda r: (r["category"], r["subcategory"], r["set_id"]),
        }
        result["correctness"] = "judge" if opts.judge is not None else "yes/no rule"
        result["metrics"] = bootstrap(rows, hallusion_metrics, **kw)
        result["categories"] = by_category(rows, hallusion_metrics, **kw)
        return result
