"""AMBER, discriminative part (Wang et al., 2023): yes/no questions about existence, attributes and
relations, scored with "No" as the positive class (the answer that rejects a hallucination).

Data: AMBER's query json (``[{"id", "image", "query"}]``) plus ``--annotations`` (AMBER's
``annotations.json``: ``[{"id", "type", "truth"}]``; generative entries, whose ``truth`` is a list,
are skipped).  A JSONL/json whose rows carry ``truth`` themselves needs no annotations file.
Scoring input: rows with the answer ``text`` (or ``response``), ``id``, and ``truth``/``type`` or an
``id`` found in ``--annotations``.  Answers are read with POPE's rule (``no``/``not`` in the first
sentence means "no").  Metrics: accuracy, precision, recall, F1 (positive = "no"), overall and per
``type`` (``discriminative-attribute-state``, ``discriminative-relation``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.eval.bootstrap import bootstrap, by_category
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    answer_text,
    first,
    item_id,
    normalize_yes_no,
    read_records,
    says_no,
)
from prefopt.eval.pope import SHORT_ANSWER, yes_no_metrics


def amber_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy and P/R/F1 with "no" as the positive class."""
    metrics = yes_no_metrics(rows, positive="no")
    metrics.pop("yes_ratio")
    return metrics


def discriminative_truth(path: str | Path) -> dict[str, dict[str, str]]:
    """``{id: {"truth": yes|no, "type": ...}}`` of the discriminative entries of an AMBER annotations file."""
    out = {}
    for line, row in read_records(path):
        if "id" not in row or "truth" not in row:
            raise DataError("annotation needs 'id' and 'truth'", path=str(path), row=line)
        if isinstance(row["truth"], list):  # generative entry: object lists, not a yes/no label
            continue
        out[str(row["id"])] = {
            "truth": normalize_yes_no(row["truth"], path, line),
            "type": row.get("type", ""),
        }
    return out


class Amber(Benchmark):
    """AMBER discriminative."""

    name = "amber"
    max_new_tokens = 16

    def _truth(self, row: dict, path: str | Path, line: int, known: dict | None) -> dict[str, str]:
        if row.get("truth") is not None:
            return {"truth": normalize_yes_no(row["truth"], path, line), "type": row.get("type", "")}
        rid = str(row.get("id"))
        if known is not None and rid in known:
            return known[rid]
        raise DataError(
            f"no ground truth for id {rid}: give 'truth' or --annotations", path=str(path), row=line
        )

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """Discriminative queries (generative ones, without a yes/no truth, are skipped)."""
        known = discriminative_truth(opts.annotations) if opts.annotations else None
        items = []
        for line, row in read_records(path):
            if known is not None and row.get("truth") is None and str(row.get("id")) not in known:
                continue
            query = first(row, ("query", "question", "text"), path, line)
            image = first(row, ("image",), path, line)
            meta = {"image": image, "query": query, **self._truth(row, path, line, known)}
            items.append(EvalItem(item_id(row, line, ("id",)), f"{query}\n{SHORT_ANSWER}", [image], meta))
        return items

    def _answer_row(self, row: dict, path: str | Path, line: int, known: dict | None) -> dict[str, Any]:
        truth = self._truth(row, path, line, known)
        answer = answer_text(row, path, line)
        return {
            "id": item_id(row, line, ("id",)),
            "pred": "no" if says_no(answer) else "yes",
            "label": truth["truth"],
            "category": truth["type"],
        }

    def read_predictions(self, path: str | Path, opts: EvalOptions) -> list[dict[str, Any]]:
        """Answer rows joined with the annotations when given."""
        known = discriminative_truth(opts.annotations) if opts.annotations else None
        return [self._answer_row(row, path, line, known) for line, row in read_records(path)]

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """One answer row with its own ``truth``."""
        return self._answer_row(row, path, line, None)

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """AMBER metrics with intervals, overall and per question type."""
        kw = {"rounds": opts.rounds, "seed": opts.seed}
        return {
            "benchmark": self.name,
            "n": len(rows),
            "metrics": bootstrap(rows, amber_metrics, **kw),
            "categories": by_category(rows, amber_metrics, **kw),
        }
