"""Multiple-choice suites (MMStar, MMBench, and any JSONL with options): first option letter match.

Data: the published TSV (``index, question, [hint], A, B, C, D, ..., answer, [category], image``
with the image base64-encoded; MMBench rows whose ``image`` is another row's index reuse that image;
MMStar writes the options inside ``question``), or JSONL rows with ``question``, ``answer`` (a
letter), ``image`` (a path) and the options as ``options`` (list ``["A. cat", ...]`` or
``["cat", ...]``, or a mapping ``{"A": "cat"}``) or as ``A``/``B``/... keys.
Scoring input: rows with the model's answer (``text`` or ``prediction``), ``answer`` and optional
``category`` / ``options``.

The prediction is the first option letter that stands alone in the answer ("B", "(B)", "B. dog",
"The answer is B"); when there is none, an answer equal to one option's text selects that option.
Metric: accuracy, overall and per category (no circular evaluation).
"""

from __future__ import annotations

import base64
import binascii
import csv
import re
import sys
from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.eval.bootstrap import bootstrap, by_category, safe_div
from prefopt.eval.common import Benchmark, EvalItem, EvalOptions, first, item_id, read_records

LETTERS = "ABCDEFGHIJ"
INSTRUCTION = "Answer with the option's letter from the given choices directly."


def extract_letter(answer: str, options: dict[str, str] | None = None) -> str | None:
    """The first standalone option letter of ``answer`` (letters limited to ``options`` when given)."""
    valid = "".join(options) if options else LETTERS[:8]
    match = re.search(rf"(?<![A-Za-z])([{valid}])(?![A-Za-z])", answer)
    if match:
        return match.group(1)
    norm = answer.strip().strip(".").lower()
    for letter, text in (options or {}).items():
        if norm and norm == str(text).strip().strip(".").lower():
            return letter
    return None


def parse_options(row: dict[str, Any], path: str | Path, line: int) -> dict[str, str]:
    """``{letter: text}`` from ``options`` (list or mapping) or from ``A``/``B``/... columns."""
    raw = row.get("options")
    if isinstance(raw, dict):
        return {str(k).strip(): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        out = {}
        for i, text in enumerate(raw):
            m = re.match(r"^\s*\(?([A-J])[.):]\s*(.*)$", str(text), re.S)
            out[m.group(1) if m else LETTERS[i]] = m.group(2) if m else str(text)
        return out
    if raw is not None:
        raise DataError("'options' must be a list or a mapping", path=str(path), row=line)
    return {c: str(row[c]) for c in LETTERS if _present(row.get(c))}


def _present(value: Any) -> bool:
    return value is not None and str(value).strip() not in ("", "nan", "None")


def mcq_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of rows whose predicted letter equals the answer."""
    return {"accuracy": safe_div(sum(r["pred"] == r["answer"] for r in rows), len(rows))}


def read_tsv(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``[(line, row)]`` of a benchmark TSV; MMBench image references resolved to the referenced image."""
    csv.field_size_limit(sys.maxsize)  # base64 images exceed the default field limit
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(enumerate(csv.DictReader(fh, delimiter="\t"), start=2))
    by_index = {str(r.get("index")): r.get("image") for _, r in rows}
    for line, row in rows:
        image = row.get("image")
        if image and len(image) < 16 and image in by_index:  # a row index, not base64 data
            row["image"] = by_index[image]
        if None in row:
            raise DataError("row has more fields than the header", path=str(path), row=line)
    return rows


def _image(row: dict[str, Any], tsv: bool, path: str | Path, line: int) -> list[Any]:
    value = row.get("image")
    if not _present(value):
        return []
    if not tsv:
        return [value]
    try:
        return [base64.b64decode(value, validate=True)]
    except (binascii.Error, ValueError) as err:
        raise DataError(f"image is not valid base64 ({err})", path=str(path), row=line) from err


class MultipleChoice(Benchmark):
    """MMStar / MMBench-style multiple choice."""

    name = "mcq"
    max_new_tokens = 16

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """Questions from a TSV or JSONL file."""
        tsv = Path(path).suffix.lower() == ".tsv"
        records = read_tsv(path) if tsv else read_records(path)
        items = []
        for line, row in records:
            question = first(row, ("question",), path, line)
            options = parse_options(row, path, line)
            answer = str(first(row, ("answer",), path, line)).strip()
            lines = [f"Hint: {row['hint']}"] if _present(row.get("hint")) else []
            lines += [str(question)] + [f"{k}. {v}" for k, v in options.items()] + [INSTRUCTION]
            meta = {"question": question, "options": options, "answer": answer}
            if _present(row.get("category")):
                meta["category"] = row["category"]
            items.append(
                EvalItem(
                    item_id(row, line, ("index", "id", "question_id")),
                    "\n".join(lines),
                    _image(row, tsv, path, line),
                    meta,
                )
            )
        return items

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """A row with the model's answer (``text``/``prediction``) and the correct letter ``answer``."""
        answer = first(row, ("text", "prediction", "response"), path, line)
        gold = str(first(row, ("answer", "gt_answer"), path, line)).strip()
        options = parse_options(row, path, line) or None
        parsed = {
            "id": item_id(row, line, ("id", "index")),
            "pred": extract_letter(str(answer), options),
            "answer": gold,
        }
        if _present(row.get("category")):
            parsed["category"] = str(row["category"])
        return parsed

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """Accuracy with intervals, overall and per category."""
        kw = {"rounds": opts.rounds, "seed": opts.seed}
        return {
            "benchmark": self.name,
            "n": len(rows),
            "n_unparsed": sum(r["pred"] is None for r in rows),
            "metrics": bootstrap(rows, mcq_metrics, **kw),
            "categories": by_category(rows, mcq_metrics, **kw),
        }
