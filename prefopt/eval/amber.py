"""AMBER (Wang et al., 2023): yes/no questions about existence, attributes and relations, scored with
"No" as the positive class (the answer that rejects a hallucination), plus a generative task.

Data: AMBER's query json (``[{"id", "image", "query"}]``: ``query_all.json``,
``query_discriminative*.json``) plus ``--annotations`` (AMBER's ``annotations.json``:
``[{"id", "type", "truth"}]``).  Generating answers asks the discriminative queries only.

Score only: ``--predictions`` in AMBER's layout (a JSON list of ``{"id", "response"}``; prefopt's
own ``predictions.jsonl`` rows with ``text`` work too), ``--annotations annotations.json`` (or rows
carrying ``truth``/``type``), optionally ``--data`` the query file answered (every answer id must
be one of its questions).  Generative answers (ids whose annotation is an object list, 1..1004)
are counted and not scored: AMBER's generative metrics need spaCy's ``en_core_web_lg`` vectors,
which the package registry does not ship.  The scoring rules (``--scoring
official|robust``) are in :mod:`prefopt.eval.amber_scoring`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.eval.amber_scoring import (
    ATTRIBUTE_PARTS,
    dimension_metrics,
    metric_fn,
    present_dimensions,
    score_amber,
)
from prefopt.eval.bootstrap import bootstrap
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    answer_text,
    first,
    item_id,
    normalize_yes_no,
    read_records,
)
from prefopt.eval.pope import SHORT_ANSWER

GENERATIVE = "generative"
GENERATIVE_NOT_SCORED = (
    "AMBER's generative metrics (CHAIR, Cover, Hal, Cog) need spaCy's en_core_web_lg word vectors, which are "
    "not on the package registry (spaCy publishes its models on its own host); prefopt does not score them"
)


def _truth_entry(row: dict[str, Any], path: str | Path, line: int) -> dict[str, Any]:
    if isinstance(row["truth"], list) or row.get("type") == GENERATIVE:  # object lists: a caption task
        return {"truth": None, "type": GENERATIVE}
    return {"truth": normalize_yes_no(row["truth"], path, line), "type": row.get("type", "")}


def read_annotations(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{id: {"truth": yes|no|None, "type": ...}}`` of an AMBER annotations file (None: generative)."""
    out = {}
    for line, row in read_records(path):
        if "id" not in row or "truth" not in row:
            raise DataError("annotation needs 'id' and 'truth'", path=str(path), row=line)
        out[str(row["id"])] = _truth_entry(row, path, line)
    return out


def discriminative_truth(path: str | Path) -> dict[str, dict[str, str]]:
    """``{id: {"truth": yes|no, "type": ...}}`` of the discriminative entries of an AMBER annotations file."""
    return {k: v for k, v in read_annotations(path).items() if v["type"] != GENERATIVE}


def _members(dimension: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts = ATTRIBUTE_PARTS if dimension == "attribute" else (dimension,)
    return [it for it in items if it["dimension"] in parts]


def _scoring(opts: EvalOptions) -> str:
    return getattr(opts, "scoring", None) or "official"


class Amber(Benchmark):
    """AMBER (discriminative scored; generative answers counted)."""

    name = "amber"
    max_new_tokens = 16

    def _truth(self, row: dict, path: str | Path, line: int, known: dict | None) -> dict[str, Any]:
        if row.get("truth") is not None:
            return _truth_entry(row, path, line)
        rid = str(row.get("id"))
        if known is not None and rid in known:
            return known[rid]
        where = "is not in --annotations" if known is not None else "has no 'truth': give --annotations"
        raise DataError(f"no ground truth for id {rid}: the id {where}", path=str(path), row=line)

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
        return {
            "id": item_id(row, line, ("id",)),
            "response": answer_text(row, path, line) if truth["type"] != GENERATIVE else "",
            "truth": truth["truth"],
            "type": truth["type"],
        }

    def read_predictions(self, path: str | Path, opts: EvalOptions) -> list[dict[str, Any]]:
        """Answer rows joined with the annotations (and checked against the query file) when given."""
        known = read_annotations(opts.annotations) if opts.annotations else None
        if len(opts.data) > 1:
            raise DataError(f"AMBER scores one query file at a time, got {len(opts.data)} --data files")
        query_file = opts.data[0] if opts.data else None
        asked = {str(r.get("id")) for _, r in read_records(query_file)} if query_file else None
        rows = []
        for line, row in read_records(path):
            if asked is not None and str(row.get("id")) not in asked:
                msg = f"answer id {row.get('id')} is not a question of {query_file}"
                raise DataError(msg, path=str(path), row=line)
            rows.append(self._answer_row(row, path, line, known))
        return rows

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """One answer row with its own ``truth``."""
        return self._answer_row(row, path, line, None)

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """AMBER metrics with intervals: the discriminative task and each dimension."""
        scoring = _scoring(opts)
        disc = [r for r in rows if r["type"] != GENERATIVE]
        n_gen = len(rows) - len(disc)
        if not disc:
            raise DataError(f"only generative answers ({n_gen}): {GENERATIVE_NOT_SCORED}")
        truth = {r["id"]: {"type": r["type"], "truth": r["truth"]} for r in disc}
        items, summary = score_amber(disc, truth, scoring)
        kw = {"rounds": opts.rounds, "seed": opts.seed}
        dims = [d for d in present_dimensions(items) if d != "discriminative"]
        result: dict[str, Any] = {"benchmark": self.name, **summary, "n_generative": n_gen}
        result["metrics"] = bootstrap(items, metric_fn("discriminative", scoring), **kw)
        result["categories"] = {d: bootstrap(_members(d, items), metric_fn(d, scoring), **kw) for d in dims}
        result["dimensions"] = dimension_metrics(items, scoring)
        if opts.data:
            result["data"] = str(opts.data[0])
        if n_gen:
            result["generative"] = {"n": n_gen, "scored": False, "reason": GENERATIVE_NOT_SCORED}
        return result
