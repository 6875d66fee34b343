"""Accuracy reward by problem type (SPEC 1.2), the MRA metric, and the TRL ``accuracy_reward`` function.

The completion's answer is the text inside its last complete ``<answer>…</answer>``; a completion without
one (no tag, or an opening tag never closed) scores 0 for every type, as in the seed code. The solution
may be tagged or bare. An empty answer scores 0 for every type. Rules:

- multiple choice: when the ground truth is a single option letter in a common form (``B``, ``b``,
  ``(B)``, ``B.``, ``B)``, ``B: a red car``, ``B. a cat``), the prediction must name that one letter; a
  prediction naming several options (``A or B``, ``A, B``, ``A B C D``) is 0. When the ground truth is
  not an option letter (``1``, ``β``, ``Option B``), the stripped strings must be identical (the seed's
  exact match).
- numerical: 0 if exactly one side has a decimal point or comma (as the Video-R1 code), else
  ``round(p, 2) == round(g, 2)``.
- OCR: ``clip(1 - WER, 0, 1)``, WER = word edit distance / max(1, number of ground-truth words), both
  strings split on any whitespace, case-sensitive (the Video-R1 ``wer``).
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
from prefopt.rewards.text import completion_answer, completion_text, extract_answer, parse_number

__all__ = ["score", "mra", "accuracy_reward", "option_letter", "word_edit_distance", "SCORERS"]


_BRACKETED = re.compile(r"\(\s*([A-Za-z])\s*\)(.*)", re.DOTALL)  # (B), (B) a cat
_PLAIN = re.compile(r"([A-Za-z])(?:([.:)])(.*))?", re.DOTALL)  # B, B., B), B: a red car
#: Words that join option letters: "(A) or (B)" names two options, not one.
_JOINED = re.compile(r"^(?:or|and|/|&|,)(?:\s|$|\()", re.IGNORECASE)


def option_letter(text: str) -> str | None:
    """The single option letter an answer names (``B``, ``b``, ``(B)``, ``B.``, ``B)``, ``B: cat``), or None.

    A letter must stand alone or be followed by ``.``/``:``/``)`` and then nothing or a space and its
    option text, so ``A or B``, ``A, B`` and ``A B C D`` (several options) name none.
    """
    t = (text or "").strip()
    m = _BRACKETED.fullmatch(t)
    if m is not None:
        letter, rest = m.group(1), m.group(2)
        if rest and not rest[0].isspace() and rest[0] not in ".:":
            return None
    else:
        m = _PLAIN.fullmatch(t)
        if m is None:
            return None
        letter, rest = m.group(1), m.group(3) or ""
        if rest and not rest[0].isspace():
            return None
    rest = rest.lstrip(".:").strip()
    if rest and _JOINED.match(rest):
        return None
    # A lower-case letter only counts alone: "a. the cat" reads as an English article more often than option A.
    if letter.islower() and rest:
        return None
    return letter.upper()


def _multiple_choice(pred: str, gt: str) -> float:
    g = option_letter(gt)
    if g is None:
        # The ground truth is no option letter ("1", "β", "Option B"): the seed's exact string match.
        return float(pred.strip() == gt.strip())
    return float(option_letter(pred) == g)


def _has_decimal(text: str) -> bool:
    return "." in text.strip().rstrip(".") or "," in text


def _numerical(pred: str, gt: str) -> float:
    if _has_decimal(pred) != _has_decimal(gt):
        return 0.0
    p, g = parse_number(pred), parse_number(gt)
    if p is None or g is None:
        return 0.0
    return float(round(p, 2) == round(g, 2))


def word_edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance between two word lists (substitution, insertion and deletion each cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            cost = 0 if ref == hyp else 1
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost))
        previous = current
    return previous[-1]


def _ocr(pred: str, gt: str) -> float:
    # Both sides split on any whitespace, case kept: the Video-R1 `wer` rule (a line break is a word break).
    ref, hyp = gt.split(), pred.split()
    wer = word_edit_distance(ref, hyp) / max(1, len(ref))
    return min(1.0, max(0.0, 1.0 - wer))


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
    pred, gt = completion_answer(completion), extract_answer(solution)
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
