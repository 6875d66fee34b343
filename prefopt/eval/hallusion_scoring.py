"""HallusionBench's scoring as pure functions: the judge prompt, the reading of its reply, and the
metrics of tianyi-lab/HallusionBench ``evaluation.py`` / ``utils.py``.

Verdicts are ``"1"`` correct, ``"0"`` incorrect, ``"2"`` unclear, as the official files store them.

- ``official`` reading: ``incorrect`` anywhere in the lower-cased reply -> 0, else ``correct``
  anywhere -> 1, else 2.  So "not incorrect" is incorrect, and "unclear, not correct" is correct.
- ``robust`` reading: the first verdict word decides (``incorrect`` / ``not correct`` / ``wrong``
  -> 0, ``correct`` / ``not incorrect`` -> 1, ``unclear`` / ``uncertain`` -> 2), whole words only.

Both readings then use the benchmark's definitions: an answer is right when its verdict is 1, or
also 2 on a Visual Supplement question asked without its figure (``figure_id`` 0: "I don't know"
is right there); aAcc is per question, qAcc per question pair (same category, subcategory,
set_id, question_id over all figures), fAcc per figure with the figure-less VS questions left out;
easy/hard are qAcc over questions with ``visual_input`` != "2" / == "2"; the yes/no bias figures
are those of ``yes_ratio_stats``.  A failed judge call (no reply; the official script retries
forever instead) counts as incorrect in both readings, so that it cannot turn into a right
"unclear", and is counted in ``n_judge_failed``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prefopt.eval.bootstrap import DRAW_KEY, safe_div

CORRECT, INCORRECT, UNCLEAR = "1", "0", "2"

# The official judge prompt, reproduced exactly (curly quotes, spacing and all): the verdicts, and
# so the published numbers, depend on its wording.
_PROMPT_HEAD = (
    "Imagine you are an intelligent teacher. Thoroughly read the question, reference answer and the "
    "prediction answer to ensure a clear understanding of the information provided. Assess the "
    "correctness of the predictions. If the prediction answer does not conflict with the reference "
    "answer, please generate \u201ccorrect\u201d. If the prediction answer conflict with the reference "
    "answer, please generate \u201cincorrect\u201d. If the prediction answer is unclear about the answer, "
    'please generate "unclear". \n\n Question:'
)


def judge_prompt(question: str, reference: str, prediction: str) -> str:
    """The official HallusionBench judge prompt for one answer (``reference`` = ``gt_answer_details``)."""
    return f"{_PROMPT_HEAD}{question}\nReference answer: {reference}\nPrediction answer:{prediction}\nOutput:"


def verdict_official(reply: str | None) -> str:
    """The official reading of a judge reply: substring ``incorrect``, else ``correct``, else unclear."""
    text = (reply or "").lower()
    if "incorrect" in text:
        return INCORRECT
    return CORRECT if "correct" in text else UNCLEAR


_VERDICT_WORDS = re.compile(r"\b(not\s+incorrect|not\s+correct|incorrect|correct|wrong|unclear|uncertain)\b")


def verdict_robust(reply: str | None) -> str:
    """prefopt's reading: the first verdict word (negation-aware, whole words) decides; none -> unclear."""
    found = _VERDICT_WORDS.search((reply or "").lower())
    if found is None:
        return UNCLEAR
    word = re.sub(r"\s+", " ", found.group(1))
    if word in ("not incorrect", "correct"):
        return CORRECT
    return UNCLEAR if word in ("unclear", "uncertain") else INCORRECT


def read_verdict(reply: str | None, scoring: str) -> str:
    """The verdict of a judge reply under ``scoring`` (official | robust)."""
    if scoring == "official":
        return verdict_official(reply)
    if scoring == "robust":
        return verdict_robust(reply)
    raise ValueError(f"scoring must be 'official' or 'robust', got {scoring!r}")


def is_correct(row: dict[str, Any], verdict: str) -> bool:
    """The benchmark's rule: verdict 1, or also 2 on a Visual Supplement question without its figure."""
    if row["category"] == "VS" and str(row["figure_id"]) == "0":
        return verdict in (CORRECT, UNCLEAR)
    return verdict == CORRECT


def _key(row: dict[str, Any], *fields: str) -> tuple:
    return (row.get(DRAW_KEY), *(str(row[f]) for f in fields))


def _all_right_share(rows: Sequence[dict[str, Any]], fields: tuple[str, ...]) -> float:
    groups: dict[tuple, bool] = {}
    for r in rows:
        k = _key(r, *fields)
        groups[k] = groups.get(k, True) and bool(r["correct"])
    return safe_div(sum(groups.values()), len(groups))


PAIR = ("category", "subcategory", "set_id", "question_id")
FIGURE = ("category", "subcategory", "set_id", "figure_id")


def _with_figure(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not (r["category"] == "VS" and str(r["figure_id"]) == "0")]


def core_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """aAcc, qAcc, fAcc, easy_aAcc and hard_aAcc (the leaderboard's names; the last two per question pair)."""
    return {
        "aAcc": safe_div(sum(bool(r["correct"]) for r in rows), len(rows)),
        "qAcc": _all_right_share(rows, PAIR),
        "fAcc": _all_right_share(_with_figure(rows), FIGURE),
        "easy_aAcc": _all_right_share([r for r in rows if str(r["visual_input"]) != "2"], PAIR),
        "hard_aAcc": _all_right_share([r for r in rows if str(r["visual_input"]) == "2"], PAIR),
    }


def figure_consistency(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Shares of figures with all / none / some questions right, and the mean share right per figure."""
    figures: dict[tuple, list[bool]] = {}
    for r in _with_figure(rows):
        figures.setdefault(_key(r, *FIGURE), []).append(bool(r["correct"]))
    n = len(figures)
    return {
        "correct": safe_div(sum(all(v) for v in figures.values()), n),
        "inconsistent": safe_div(sum(any(v) and not all(v) for v in figures.values()), n),
        "wrong": safe_div(sum(not any(v) for v in figures.values()), n),
        "score": safe_div(sum(sum(v) / len(v) for v in figures.values()), n),
    }


def yes_no_bias(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``yes_ratio_stats``: the answer counts as "yes" when its correctness equals ``gt_answer`` (1/0).

    ``pct_diff`` = share of such "yes" minus share of yes ground truths; ``fp_ratio`` = share of
    wrong answers whose ground truth is no.
    """
    gt = [int(r["gt_answer"]) for r in rows]
    said_yes = [int(int(r["correct"]) == g) for r, g in zip(rows, gt, strict=True)]
    wrong_gt = [g for r, g in zip(rows, gt, strict=True) if not r["correct"]]
    return {
        "pct_diff": safe_div(sum(said_yes), len(rows)) - safe_div(sum(gt), len(rows)),
        "fp_ratio": safe_div(len(wrong_gt) - sum(wrong_gt), len(wrong_gt)),
    }


def score_hallusion(
    rows: Sequence[dict[str, Any]], replies: Sequence[str | None], scoring: str = "official"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-answer items (``verdict``, ``correct``) and the metrics of judged answers.

    ``rows`` carry ``category, subcategory, set_id, figure_id, question_id, visual_input,
    gt_answer`` ("1"/"0"); ``replies`` are the judge's, in the same order.
    """
    read_verdict("", scoring)
    items, disagreements = [], 0
    for row, reply in zip(rows, replies, strict=True):
        official, robust = verdict_official(reply), verdict_robust(reply)
        disagreements += official != robust
        verdict = INCORRECT if reply is None else official if scoring == "official" else robust
        items.append({**row, "verdict": verdict, "correct": is_correct(row, verdict)})
    metrics: dict[str, Any] = {
        "scoring": scoring,
        "n": len(items),
        "n_unparsed": sum(it["verdict"] == UNCLEAR for it in items),
        "n_judge_failed": sum(reply is None for reply in replies),
        "parse_disagreements": disagreements,
        "overall": core_metrics(items),
        "by_category": {},
        "figures": figure_consistency(items),
        "yes_no_bias": yes_no_bias(items),
    }
    for cat in sorted({str(it["category"]) for it in items}):
        sub = [it for it in items if str(it["category"]) == cat]
        metrics["by_category"][cat] = {**core_metrics(sub), "figures": figure_consistency(sub)}
    return items, metrics
