"""POPE: yes/no questions about object presence (random / popular / adversarial splits).

Data: POPE's JSONL, one ``{"question_id", "image", "text", "label"}`` per line (``text`` is the
question).  The split goes in ``category``: taken from the row, else from the file name
(``coco_pope_adversarial.json`` -> ``adversarial``).  The prompt appends LLaVA-1.5's short-answer
instruction.  With ``--template four_stage`` the question is wrapped in the GWYS four-stage prompt and
only the text inside the last ``<answer>`` tag is read; an answer without that tag is *unparsed* under
both readings (counted wrong, and reported in ``n_unparsed``).

Readings of an answer (``--scoring``):

- ``official`` (default) -- the rule of POPE's ``evaluate.py`` and of LLaVA's ``eval_pope.py`` (the
  two agree): keep the text before the first ``.``, delete commas, cut at single spaces, and answer "no"
  when one of the pieces is exactly ``No``, ``no`` or ``not``; anything else is "yes".  So ``NO``,
  ``(No)``, ``**No**``, ``No;`` and ``No\\nIt is absent.`` read as "yes", as they do in published numbers.
- ``robust`` -- the same first sentence, lower-cased and cut into letter runs: "no" when one of them
  is ``no`` or ``not``.

"yes" is the positive class: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic
mean (0 where the official script would divide by zero), yes_ratio = share of "yes" answers.  Each
metric has a bootstrap 95 % interval, overall (all answers pooled) and per split; when several splits
are scored, ``mean_of_splits`` holds the mean of the per-split metrics, the number papers report.

Score-only runs join official answer files with official question files (see :mod:`prefopt.eval.pope_files`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefopt.eval.bootstrap import bootstrap, by_category, safe_div
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    answer_text,
    check_scoring,
    item_id,
    normalize_yes_no,
    read_records,
    require,
    scoring_summary,
)
from prefopt.eval.pope_files import SPLITS, read_joined, split_from_name  # noqa: F401  (public here)
from prefopt.prompts import build_prompt
from prefopt.rewards.text import extract_tag

SHORT_ANSWER = "Answer the question using a single word or phrase."
TEMPLATES = ("plain", "four_stage")
OFFICIAL_NO_WORDS = frozenset({"No", "no", "not"})
_LETTERS = re.compile(r"[a-z]+")


def pope_prompt(question: str, template: str) -> str:
    """The prompt for one question: LLaVA-1.5's short-answer instruction, or the four-stage GWYS prompt."""
    if template == "four_stage":
        return build_prompt(question, "yes/no", (), "four_stage")
    if template != "plain":
        raise ValueError(f"POPE template must be one of {TEMPLATES}, got {template!r}")
    return f"{question}\n{SHORT_ANSWER}"


def _first_sentence(text: str) -> str:
    return text.split(".", 1)[0]


def official_reading(text: str) -> str:
    """``yes``/``no`` as POPE's and LLaVA's scripts read an answer (case-sensitive words, space-split)."""
    pieces = _first_sentence(text).replace(",", "").split(" ")
    return "no" if OFFICIAL_NO_WORDS.intersection(pieces) else "yes"


def robust_reading(text: str) -> str:
    """``yes``/``no`` by prefopt's reading: ``no``/``not`` among the lower-cased letter runs of the first sentence."""
    words = _LETTERS.findall(_first_sentence(text).lower())
    return "no" if ("no" in words or "not" in words) else "yes"


READINGS = {"official": official_reading, "robust": robust_reading}


def answer_part(answer: str, template: str) -> str | None:
    """The text a reading looks at: the whole answer, or (four-stage) the last ``<answer>`` content, None if absent."""
    if template != "four_stage":
        return answer
    inner = extract_tag(answer, "answer")
    return inner if inner is not None and inner.strip() else None


def yes_no_prediction(answer: str, template: str, scoring: str = "robust") -> str:
    """``yes``/``no`` under ``scoring``; under the four-stage template a missing ``<answer>`` gives ``none``."""
    part = answer_part(answer, template)
    return "none" if part is None else READINGS[check_scoring(scoring)](part)


def both_readings(answer: str, template: str) -> dict[str, str | None]:
    """``{"pred_official", "pred_robust"}`` of one answer (None where the answer tag is missing)."""
    part = answer_part(answer, template)
    return {f"pred_{name}": (None if part is None else fn(part)) for name, fn in READINGS.items()}


def choose_reading(rows: list[dict[str, Any]], scoring: str) -> list[dict[str, Any]]:
    """Rows with ``pred`` set from the chosen reading (``none`` for an unparsed answer: always wrong)."""
    key = f"pred_{check_scoring(scoring)}"
    return [{**r, "pred": r[key] if r.get(key) is not None else "none"} for r in rows]


def yes_no_metrics(rows: list[dict[str, Any]], positive: str = "yes") -> dict[str, float]:
    """Accuracy, precision, recall, F1 (``positive`` is the positive class) and yes_ratio of rows with
    ``pred`` and ``label`` in {yes, no}."""
    tp = sum(r["pred"] == positive and r["label"] == positive for r in rows)
    fp = sum(r["pred"] == positive and r["label"] != positive for r in rows)
    fn = sum(r["pred"] != positive and r["label"] == positive for r in rows)
    correct = sum(r["pred"] == r["label"] for r in rows)
    precision, recall = safe_div(tp, tp + fp), safe_div(tp, tp + fn)
    return {
        "accuracy": safe_div(correct, len(rows)),
        "precision": precision,
        "recall": recall,
        "f1": safe_div(2 * precision * recall, precision + recall),
        "yes_ratio": safe_div(sum(r["pred"] == "yes" for r in rows), len(rows)),
    }


def mean_of_splits(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean over categories of :func:`yes_no_metrics` per category (rows without one form their own)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("category") or ""), []).append(row)
    per = [yes_no_metrics(g) for g in groups.values()]
    return {k: sum(m[k] for m in per) / len(per) for k in per[0]} if per else yes_no_metrics(rows)


def pope_scores(rows: list[dict[str, Any]], scoring: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-item rows under ``scoring`` (``pred`` set) and their pooled point metrics."""
    scored = choose_reading(rows, scoring)
    return scored, yes_no_metrics(scored)


class Pope(Benchmark):
    """POPE (Li et al., 2023)."""

    name = "pope"
    max_new_tokens = 16

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """POPE JSONL questions."""
        split = split_from_name(path)
        items = []
        for line, row in read_records(path):
            require(row, ("image", "text", "label"), path, line)
            meta = {
                "question_id": row.get("question_id", line),
                "image": row["image"],
                "question": row["text"],
                "label": normalize_yes_no(row["label"], path, line),
            }
            category = row.get("category", split)
            if category is not None:
                meta["category"] = category
            prompt = pope_prompt(row["text"], opts.template)
            items.append(EvalItem(item_id(row, line), prompt, [row["image"]], meta))
        return items

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """A row with the answer ``text``, ``label`` yes/no and optional ``category``."""
        require(row, ("label",), path, line)
        answer = answer_text(row, path, line)
        parsed = {
            "id": item_id(row, line),
            **both_readings(answer, opts.template),
            "label": normalize_yes_no(row["label"], path, line),
        }
        if row.get("category") not in (None, ""):
            parsed["category"] = str(row["category"])
        return parsed

    def read_prediction_files(self, paths: list[str], opts: EvalOptions) -> list[dict[str, Any]]:
        """Answer files, joined with the official question files of ``opts.data`` when given."""
        if not opts.data:
            return super().read_prediction_files(paths, opts)
        rows, self.files = read_joined(paths, list(opts.data), opts, both_readings)
        return rows

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """POPE metrics with intervals, overall and per category, under ``opts.scoring``."""
        kw = {"rounds": opts.rounds, "seed": opts.seed}
        scored, _ = pope_scores(rows, opts.scoring)
        several = len({r.get("category") for r in scored}) > 1
        out = {
            "benchmark": self.name,
            "n": len(rows),
            **scoring_summary([r["pred_official"] for r in rows], [r["pred_robust"] for r in rows], opts.scoring),
            "metrics": bootstrap(scored, yes_no_metrics, **kw),
            "categories": by_category(scored, yes_no_metrics, **kw),
        }
        if several:
            out["mean_of_splits"] = bootstrap(scored, mean_of_splits, **kw)
        if getattr(self, "files", None):
            out["files"] = self.files
        return out
