"""Shared pieces of the benchmark modules: the item record, file readers with line-numbered errors,
the yes/no rule, and the :class:`Benchmark` base class every benchmark module subclasses."""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.errors import DataError


@dataclass
class EvalItem:
    """One benchmark question: the prompt, its images, and the ground truth kept in ``meta``."""

    id: str
    prompt: str
    images: list[Any] = field(default_factory=list)  # paths (relative to the image root) or raw bytes
    meta: dict[str, Any] = field(default_factory=dict)  # copied into the prediction row


@dataclass
class EvalOptions:
    """Scoring settings shared by all benchmarks (most benchmarks read only a few)."""

    rounds: int = 100  # bootstrap rounds
    seed: int = 0
    annotations: str | None = None  # CHAIR: COCO instances json; AMBER: annotations json
    judge: Any = None  # a prefopt.rewards.judge.JudgeConfig for mmhal / hallusion
    bbox_format: str = "xyxy"  # RefCOCO ground-truth boxes: xyxy | xywh
    box_scale: str = "abs"  # RefCOCO predicted boxes: abs (pixels) | unit (0-1) | thousand (0-1000)
    vocabulary: str | None = None  # CHAIR: JSON {class: [synonyms]} replacing the COCO table
    template: str = "plain"  # POPE: plain (short-answer instruction) | four_stage (GWYS prompt, <answer> scored)
    scoring: str = "official"  # official (the benchmark's own script's rules) | robust (prefopt's reading)
    data: str | None = None  # score-only runs: the official question file the predictions answer


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error becomes a DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON ({err.msg})", path=str(path), row=err.lineno) from err


def read_jsonl(path: str | Path, *, allow_truncated_tail: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """``[(line_number, object)]`` of a JSONL file; blank lines are skipped, bad lines raise DataError.

    With ``allow_truncated_tail`` a final line without its newline that does not parse (a run killed
    mid-write) is dropped instead, so a resumed run redoes just that item.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            last = number == len(lines) and not text.endswith("\n")
            if allow_truncated_tail and last:
                break
            raise DataError(f"invalid JSON ({err.msg})", path=str(path), row=number) from err
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), row=number)
        out.append((number, obj))
    return out


def read_records(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Records of a JSON list (numbered from 1), a JSON mapping of records, or JSONL (numbered by line).

    The layout is read from the content, not the suffix: POPE ships JSONL files named ``*.json``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        if path.suffix.lower() != ".json":
            return read_jsonl(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return read_jsonl(path)
        if not isinstance(data, dict):
            raise DataError("expected JSON records", path=str(path))
        is_mapping = data and all(isinstance(v, dict) for v in data.values())
        data = list(data.values()) if is_mapping else [data]
    else:
        data = read_json(path)
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise DataError(f"record {i} is not an object", path=str(path), row=i)
    return list(enumerate(data, start=1))


def require(row: dict[str, Any], keys: Sequence[str], path: str | Path, line: int) -> None:
    """Raise DataError naming file, line and key when one of ``keys`` is missing."""
    for key in keys:
        if key not in row or row[key] is None:
            raise DataError(f"missing key '{key}'", path=str(path), row=line)


def first(row: dict[str, Any], keys: Sequence[str], path: str | Path, line: int) -> Any:
    """The value of the first of ``keys`` present in ``row`` (DataError naming them all when none is)."""
    for key in keys:
        if row.get(key) is not None:
            return row[key]
    raise DataError(f"missing key (one of {', '.join(repr(k) for k in keys)})", path=str(path), row=line)


_WORD = re.compile(r"[a-z]+")


def says_no(text: str) -> bool:
    """POPE's rule: the first sentence (up to the first '.') contains the word ``no`` or ``not``."""
    sentence = text.split(".")[0] if "." in text else text
    words = _WORD.findall(sentence.lower())
    return "no" in words or "not" in words


def normalize_yes_no(value: Any, path: str | Path, line: int) -> str:
    """A ground-truth label as ``yes``/``no`` (accepts yes/no, true/false, 1/0 in any case)."""
    text = str(value).strip().lower()
    if text in ("yes", "true", "1", "y"):
        return "yes"
    if text in ("no", "false", "0", "n"):
        return "no"
    raise DataError(f"label {value!r} is not yes/no", path=str(path), row=line)


class Benchmark(abc.ABC):
    """A benchmark: how to read its published file into prompts, and how to score predictions."""

    name: str = ""
    #: default generation budget; captioning benchmarks need more than yes/no ones
    max_new_tokens: int = 16

    @abc.abstractmethod
    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """The questions of the benchmark file at ``path``."""

    @abc.abstractmethod
    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """Validate and normalise one predictions.jsonl row (DataError naming file and line)."""

    @abc.abstractmethod
    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """metrics.json content for parsed prediction rows."""

    def read_predictions(self, path: str | Path, opts: EvalOptions) -> list[dict[str, Any]]:
        """All rows of a predictions file (JSONL, or a ``.json`` list), parsed."""
        return [self.parse_prediction(row, path, line, opts) for line, row in read_records(path)]

    def note_images(self, item: EvalItem, images: list[Any]) -> None:  # noqa: B027 (optional hook)
        """Record facts about the loaded images in ``item.meta`` (the default keeps nothing)."""


def answer_text(row: dict[str, Any], path: str | Path, line: int) -> str:
    """The model's answer of a prediction row (``text``, or ``answer``/``response``/``model_answer``)."""
    value = first(row, ("text", "answer", "response", "model_answer", "prediction"), path, line)
    if not isinstance(value, str):
        raise DataError(f"the answer must be a string, got {type(value).__name__}", path=str(path), row=line)
    return value


def item_id(row: dict[str, Any], line: int, keys: Sequence[str] = ("question_id", "id", "index")) -> str:
    """The id of a record (its first id-like key), or its line number when it has none."""
    for key in keys:
        if row.get(key) is not None:
            return str(row[key])
    return str(line)
