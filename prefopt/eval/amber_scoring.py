"""AMBER's discriminative scoring as a pure function: per-answer readings and every dimension's metrics.

Two readings of an answer (``scoring``):

- ``official`` -- AMBER's ``inference.py``: only the exact strings ``Yes`` and ``No`` are answers.
  Anything else ("yes", "No.", "No, there is none") is never correct and never counts as a "No"
  (it is left out of the precision denominator but stays in accuracy's and recall's).  Counters
  start at 0 for hits and at 0.001 for totals, every figure is rounded to one decimal in percent,
  and F1 is computed from the *rounded* precision and recall as ``2PR / (P + R + eps)`` with
  ``eps = 1e-3`` for Existence and ``1e-4`` elsewhere.  Values here are those printed figures / 100.
- ``robust`` -- prefopt's reading (the first sentence says ``no``/``not`` -> "no", else "yes"),
  plain ratios and ``F1 = 2PR / (P + R)``, no rounding.

"No" is the positive class (the answer that rejects a hallucination).  Dimensions follow the
question ``type`` of ``annotations.json``: Existence (``discriminative-hallucination``), State,
Number, Action (``discriminative-attribute-*``), Attribute (those three pooled; in the official
rule their 0.001 starting totals are pooled too) and Relation (every other discriminative type).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prefopt.eval.common import says_no

#: question type -> dimension, as AMBER's script branches on it (anything else is Relation)
TYPE_DIMENSION = {
    "discriminative-hallucination": "existence",
    "discriminative-attribute-state": "state",
    "discriminative-attribute-number": "number",
    "discriminative-attribute-action": "action",
}
ATTRIBUTE_PARTS = ("state", "number", "action")
DIMENSIONS = ("existence", "attribute", "state", "number", "action", "relation")


def dimension_of(qtype: str) -> str:
    """The AMBER dimension of a discriminative question type."""
    return TYPE_DIMENSION.get(qtype, "relation")


def read_official(response: str) -> str | None:
    """AMBER's reading: ``yes``/``no`` for the exact strings ``Yes``/``No``, else None (never correct)."""
    return {"Yes": "yes", "No": "no"}.get(response)


def read_robust(response: str) -> str:
    """prefopt's reading: ``no`` when the first sentence says no/not, else ``yes``."""
    return "no" if says_no(response) else "yes"


def read_answer(response: str, scoring: str) -> str | None:
    """The yes/no an answer is read as under ``scoring`` (None: unparsed, counted wrong)."""
    if scoring == "official":
        return read_official(response)
    if scoring == "robust":
        return read_robust(response)
    raise ValueError(f"scoring must be 'official' or 'robust', got {scoring!r}")


def _counts(items: Iterable[dict[str, Any]]) -> dict[str, int]:
    c = {"n": 0, "correct": 0, "truth_no": 0, "hit_no": 0, "said_no": 0}
    for it in items:
        c["n"] += 1
        c["correct"] += it["pred"] == it["truth"]
        c["truth_no"] += it["truth"] == "no"
        c["hit_no"] += it["truth"] == "no" and it["pred"] == "no"
        c["said_no"] += it["pred"] == "no"
    return c


def _official_figures(c: dict[str, float], eps: float, parts: int = 1) -> dict[str, float]:
    """Percent figures as inference.py prints them, then / 100 (``parts`` pooled 0.001 starts)."""
    start = 0.001 * parts
    acc = round(c["correct"] / (c["n"] + start) * 100, 1)
    prec = round(c["hit_no"] / (c["said_no"] + start) * 100, 1)
    rec = round(c["hit_no"] / (c["truth_no"] + start) * 100, 1)
    p, r = prec / 100, rec / 100
    f1 = round(2 * p * r / (p + r + eps) * 100, 1)
    return {"accuracy": acc / 100, "precision": p, "recall": r, "f1": f1 / 100}


def _robust_figures(c: dict[str, float]) -> dict[str, float]:
    acc = c["correct"] / c["n"] if c["n"] else 0.0
    p = c["hit_no"] / c["said_no"] if c["said_no"] else 0.0
    r = c["hit_no"] / c["truth_no"] if c["truth_no"] else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"accuracy": acc, "precision": p, "recall": r, "f1": f1}


def present_dimensions(items: Sequence[dict[str, Any]]) -> list[str]:
    """``discriminative`` (all answers) and the dimensions that have answers, in AMBER's print order."""
    dims = {it["dimension"] for it in items}
    out = ["discriminative"] if items else []
    for dim in DIMENSIONS:
        if dim in dims or (dim == "attribute" and dims & set(ATTRIBUTE_PARTS)):
            out.append(dim)
    return out


def dimension_metrics(items: Sequence[dict[str, Any]], scoring: str) -> dict[str, dict[str, float]]:
    """``{"discriminative" | dimension: {accuracy, precision, recall, f1}}`` for dimensions with items."""
    return {dim: metric_fn(dim, scoring)(items) for dim in present_dimensions(items)}


def metric_fn(dimension: str, scoring: str):
    """``items -> {accuracy, precision, recall, f1}`` of one dimension (``discriminative``: all items)."""

    def fn(items: Sequence[dict[str, Any]]) -> dict[str, float]:
        if dimension == "attribute":
            items = [it for it in items if it["dimension"] in ATTRIBUTE_PARTS]
        elif dimension != "discriminative":
            items = [it for it in items if it["dimension"] == dimension]
        c = _counts(items)
        if scoring != "official":
            return _robust_figures(c)
        eps = 1e-3 if dimension == "existence" else 1e-4
        return _official_figures(c, eps, parts=len(ATTRIBUTE_PARTS) if dimension == "attribute" else 1)

    return fn


def score_amber(
    answers: Sequence[dict[str, Any]],
    truth: dict[str, dict[str, Any]],
    scoring: str = "official",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-answer items and metrics of discriminative answers ``[{id, response}]`` against ``truth``.

    ``truth`` maps a question id to ``{"type", "truth"}`` (yes/no).  The metrics hold ``scoring``,
    ``n``, ``n_unparsed`` (answers the chosen reading cannot classify), ``parse_disagreements``
    (answers the official and robust readings classify differently) and ``dimensions``.
    """
    read_answer("", scoring)  # reject an unknown scoring before reading anything
    items = []
    disagreements = 0
    for ans in answers:
        rid = str(ans["id"])
        official, robust = read_official(ans["response"]), read_robust(ans["response"])
        disagreements += official != robust
        qtype = truth[rid]["type"]
        pred = official if scoring == "official" else robust
        items.append(
            {
                "id": rid,
                "type": qtype,
                "dimension": dimension_of(qtype),
                "truth": truth[rid]["truth"],
                "pred": pred,
                "correct": pred == truth[rid]["truth"],
            }
        )
    metrics = {
        "scoring": scoring,
        "n": len(items),
        "n_unparsed": sum(it["pred"] is None for it in items),
        "parse_disagreements": disagreements,
        "dimensions": dimension_metrics(items, scoring),
    }
    return items, metrics
