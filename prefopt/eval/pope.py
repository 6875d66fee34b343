"""POPE: yes/no questions about object presence (random / popular / adversarial splits).

Data: POPE's JSONL, one ``{"question_id", "image", "text", "label"}`` per line (``text`` is the
question).  The split goes in ``category``: taken from the row, else from the file name
(``coco_pope_adversarial.json`` -> ``adversarial``).  The prompt appends LLaVA-1.5's short-answer
instruction.

With ``--template four_stage`` the question is wrapped in the GWYS four-stage prompt
(prethink/caption/think/answer) and only the text inside the last ``<answer>`` tag is scored; an answer
without that tag counts as neither yes nor no (wrong whatever the label).

Scoring: an answer is "no" when the words of its first sentence include ``no`` or ``not`` (the rule
of POPE's evaluation script), else "yes".  "yes" is the positive class:
precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean, yes_ratio = share of
answers that are "yes".  Each with a bootstrap 95 % interval, overall and per category.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.eval.bootstrap import bootstrap, by_category, safe_div
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    answer_text,
    item_id,
    normalize_yes_no,
    read_records,
    require,
    says_no,
)

SHORT_ANSWER = "Answer the question using a single word or phrase."
SPLITS = ("adversarial", "popular", "random")
TEMPLATES = ("plain", "four_stage")


def pope_prompt(question: str, template: str) -> str:
    """The prompt for one question: LLaVA-1.5's short-answer instruction, or the four-stage GWYS prompt."""
    if template == "four_stage":
        from prefopt.grpo.prompts import build_prompt

        return build_prompt(question, "yes/no", (), "four_stage")
    if template != "plain":
        raise ValueError(f"POPE template must be one of {TEMPLATES}, got {template!r}")
    return f"{question}\n{SHORT_ANSWER}"


def yes_no_prediction(answer: str, template: str) -> str:
    """``yes``/``no`` by POPE's rule; under the four-stage template only the ``<answer>`` text counts and a
    missing tag gives ``none``."""
    if template == "four_stage":
        from prefopt.rewards.text import extract_tag

        inner = extract_tag(answer, "answer")
        if inner is None or not inner.strip():
            return "none"
        answer = inner
    return "no" if says_no(answer) else "yes"


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


def split_from_name(path: str | Path) -> str | None:
    """The POPE split named in a file name, if any."""
    stem = Path(path).name.lower()
    return next((s for s in SPLITS if s in stem), None)


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
            "pred": yes_no_prediction(answer, opts.template),
            "label": normalize_yes_no(row["label"], path, line),
        }
        if row.get("category") not in (None, ""):
            parsed["category"] = str(row["category"])
        return parsed

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """POPE metrics with intervals, overall and per category."""
        kw = {"rounds": opts.rounds, "seed": opts.seed}
        return {
            "benchmark": self.name,
            "n": len(rows),
            "metrics": bootstrap(rows, yes_no_metrics, **kw),
            "categories": by_category(rows, yes_no_metrics, **kw),
        }
