"""Accuracy reward by problem type (SPEC 1.2), the MRA metric, and the TRL ``accuracy_reward`` function.

Both the completion and the solution may wrap their answer in ``<answer>…</answer>``; the last such tag
counts, and a string without one is taken whole. An empty answer scores 0 for every type. Rules:

- multiple choice: option letters equal (``B``, ``(B)``, ``B.`` and ``B. a cat`` all read as ``B``).
- numerical: 0 if exactly one side has a decimal point or comma (as the Video-R1 code), else
  ``round(p, 2) == round(g, 2)``.
- OCR: ``clip(1 - WER, 0, 1)`` with WER = word edits (jiwer) / max(1, number of ground-truth words).
- free-form: mean of stemmed ROUGE-1/2/L F-scores, clipped to [0, 1].
- regression: ``1 - clip(|p - g| / |g|, 0, 1)``; for ``g == 0`` the relative error is 0 if ``p == 0``
  else 1 (the seed's ``+1e-9`` trick would score an exact 0 as wrong).
- yes/no: exact match after lower-casing and dropping surrounding punctuation and spaces.
- math: symbolic equivalence with math-verify.
- grounding: GIoU score ``(GIoU + 1) / 2`` of ``[x1, y1, x2, y2]`` boxes (see ``grounding.py``).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

from prefopt.rewards.grounding import giou_score, parse_box
from prefopt.rewards.text import completion_text, extract_answer, parse_number

__all__ = ["score", "mra", "accuracy_reward", "option_letter", "SCORERS"]


def option_letter(text: str) -> str | None:
    """The option letter an answer names (``B``, ``(B)``, ``B.``, ``B) cat``, ``b``), or None."""
    m = re.match(r"^\(?\s*([A-Za-z])\s*\)?(?:$|[\s.:)\]])", text.strip())
    if m is None:
        return None
    letter = m.group(1)
    # A lone lower-case letter is a letter answer; "a cat" is an English article, not option A.
    if letter.islower() and text.strip().rstrip(".)").lstrip("(") != letter:
        return None
    return letter.upper()


def _multiple_choice(pred: str, gt: str) -> float:
    p, g = option_letter(pred), option_letter(gt)
    return float(p is not None and p == g)


def _has_decimal(text: str) -> bool:
    return "." in text.strip().rstrip(".") or "," in text


def _numerical(pred: str, gt: str) -> float:
    if _has_decimal(pred) != _has_decimal(gt):
        return 0.0
    p, g = parse_number(pred), parse_number(gt)
    if p is None or g is None:
        return 0.0
    return float(round(p, 2) == round(g, 2))


def _ocr(pred: str, gt: str) -> float:
    import jiwer

    if not gt.split():
        return float(not pred.split())
    if not pred.split():
        return 0.0
    out = jiwer.process_words(gt, pred)
    edits = out.substitutions + out.deletions + out.insertions
    return min(1.0, max(0.0, 1.0 - edits / max(1, len(gt.split()))))


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _free_form(pred: str, gt: str) -> float:
    scores = _rouge().score(gt, pred)
    mean = sum(scores[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")) / 3.0
    return min(1.0, max(0.0, mean))


def _relative_error(p: float, g: float) -> float:
    if g == 0:
        return 0.0 if p == 0 else float("inf")
    return abs(p - g) / abs(g)


def _regression(pred: str, gt: str) -> float:
    p, g = parse_number(pred), parse_number(gt)
    if p is None or g is None:
        return 0.0
    return 1.0 - min(1.0, max(0.0, _relative_error(p, g)))


def mra(pred: float | str, gt: float | str) -> float:
    """Mean relative accuracy: mean over θ ∈ {0.50, 0.55, …, 0.95} of ``1[|p - g| / |g| < 1 - θ]``."""
    p = parse_number(extract_answer(pred)) if isinstance(pred, str) else float(pred)
    g = parse_number(extract_answer(gt)) if isinstance(gt, str) else float(gt)
    if p is None or g is None:
        return 0.0
    rel = _relative_error(p, g)
    thresholds = [0.50 + 0.05 * k for k in range(10)]
    return sum(rel < 1.0 - t for t in thresholds) / len(thresholds)


def _normalise_yes_no(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".,!?;:\"'()[] ").lower())


def _yes_no(pred: str, gt: str) -> float:
    return float(_normalise_yes_no(pred) == _normalise_yes_no(gt))


def _math(pred: str, gt: str) -> float:
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(gt if "$" in gt or "\\" in gt else f"${gt}$", parsing_timeout=timeout)
    answer = parse(pred if "$" in pred or "\\" in pred else f"${pred}$", parsing_timeout=timeout)
    if not gold or not answer:
        return 0.0
    return float(verify(gold, answer, timeout_seconds=timeout))


def _grounding(pred: str, gt: str) -> float:
    p, g = parse_box(pred), parse_box(gt)
    if p is None or g is None:
        return 0.0
    return giou_score(p, g)


SCORERS = {
    "multiple choice": _multiple_choice,
    "numerical": _numerical,
    "OCR": _ocr,
    "free-form": _free_form,
    "regression": _regression,
    "yes/no": _yes_no,
    "math": _math,
    "grounding": _grounding,
}


def score(completion: str, solution: str, problem_type: str) -> float:
    """Accuracy of ``completion`` against ``solution`` under the rule of ``problem_type`` (in [0, 1])."""
    scorer = SCORERS.get(problem_type)
    if scorer is None:
        raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {', '.join(SCORERS)}")
    pred, gt = extract_answer(completion), extract_answer(solution)
    if not pred or not gt:
        return 0.0
    try:
        return float(scorer(pred, gt))
    except (ValueError, ArithmeticError, OverflowError):
        # A malformed model answer (e.g. an unparsable expression) is simply wrong, never a crash.
        return 0.0


def accuracy_reward(
    prompts: list[Any],
    completions: list[Any],
    solution: list[str],
    problem_type: list[str] | str,
    **kwargs: Any,
) -> list[float]:
    """TRL reward function: :func:`score` of each completion against its row's ``solution``/``problem_type``."""
    types = [problem_type] * len(completions) if isinstance(problem_type, str) else problem_type
    return [score(completion_text(c), s, t) for c, s, t in zip(completions, solution, types, strict=True)]


accuracy_reward.__name__ = "accuracy"
