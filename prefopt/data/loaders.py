"""Raw row loading for the format readers: local JSON / JSONL / parquet files or hub datasets.

Everything goes through ``datasets.load_dataset`` (memory-mapped Arrow cache, hub names passed
through). What ``datasets`` does not give is a usable error: a JSON syntax error surfaces as a
generic "An error occurred while generating the dataset", and it accepts some invalid JSON. JSONL
files are therefore checked line by line first, and JSON files are checked with :mod:`json`, so a
syntax error names its line and column. Rows come back with image columns undecoded, as
``{"bytes", "path"}`` dicts.

Row numbers in errors count from 1 (the first data row is row 1); JSON syntax errors name the 1-based line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefopt.errors import DataError

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


def check_jsonl(path: str | os.PathLike) -> int:
    """Parse every line of a JSONL file; return the number of rows or raise DataError naming the line."""
    rows = 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON on line {lineno}, column {exc.colno}: {exc.msg}",
                                path=os.fspath(path)) from exc
            if not isinstance(value, dict):
                raise DataError(f"line {lineno} is a JSON {type(value).__name__}, expected an object",
                                path=os.fspath(path))
            rows += 1
    return rows


def _first_line_is_object(text: str) -> bool:
    """Whether the first non-blank line is a whole JSON object (then the file is JSON Lines)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _syntax_error(path: Path, exc: json.JSONDecodeError) -> DataError:
    return DataError(f"invalid JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}", path=str(path))


def _rows_of(value: Any, path: Path) -> list[dict[str, Any]]:
    """The list of row objects in parsed JSON (a list, or one object wrapping a single such list)."""
    if isinstance(value, dict):
        # Some exports wrap the rows: {"data": [...]} / {"annotations": [...]}.
        lists = [v for v in value.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(lists) != 1:
            raise DataError("expected a JSON list of objects (or one object holding such a list)", path=str(path))
        value = lists[0]
    if not isinstance(value, list):
        raise DataError(f"expected a JSON list of objects, found a {type(value).__name__}", path=str(path))
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, found a {type(row).__name__}", path=str(path), row=i + 1)
    return value


def _load_json(path: Path, cache_dir: str | None) -> Any:
    """A ``.json`` file: JSON Lines, a list of rows, or an object wrapping the list.

    ``datasets`` tolerates some invalid JSON (trailing commas) and reads a wrapping object as one row,
    so the syntax is checked strictly first; the check discards every object as it is parsed, which
    keeps its memory small even for the 665k-row LLaVA mix.
    """
    import datasets

    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    if _first_line_is_object(text):
        check_jsonl(path)
    else:
        try:
            json.loads(text, object_pairs_hook=lambda _pairs: None)
        except json.JSONDecodeError as exc:
            raise _syntax_error(path, exc) from exc
        if not text.lstrip().startswith("["):
            return _rows_of(json.loads(text), path)
    try:
        return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - valid JSON that Arrow cannot hold (e.g. nested mixed types)
        if _first_line_is_object(text):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return _rows_of(json.loads(text), path)


def _without_image_decoding(feature: Any) -> Any:
    """``feature`` with every ``Image`` inside it set to ``decode=False`` (None if nothing changes)."""
    import copy

    import datasets

    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=False) if feature.decode else None
    inner = getattr(feature, "feature", None)
    if inner is not None and not isinstance(feature, dict):  # List / LargeList of images
        changed = _without_image_decoding(inner)
        if changed is not None:
            feature = copy.copy(feature)
            feature.feature = changed
            return feature
    return None


def _undecoded(ds: Any) -> Any:
    """The dataset with image columns left as ``{"bytes", "path"}`` dicts instead of decoded to PIL.

    Records keep images undecoded (decoding a whole dataset up front costs minutes and gigabytes);
    other feature types (e.g. ``Json`` columns of mixed type) still decode to Python values.
    """
    for column, feature in ds.features.items():
        changed = _without_image_decoding(feature)
        if changed is not None:
            ds = ds.cast_column(column, changed)
    return ds


def _load_local(path: Path, split: str, cache_dir: str | None) -> Any:
    import datasets

    suffix = path.suffix.lower()
    if path.is_dir():
        return datasets.load_dataset(str(path), split=split, cache_dir=cache_dir)
    if suffix in PARQUET_SUFFIXES:
        return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=cache_dir)
    if suffix == ".json":
        return _load_json(path, cache_dir)
    if suffix in JSON_SUFFIXES:
        if check_jsonl(path) == 0:
            return []
        return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
    raise DataError(f"unknown file type {suffix!r}: expected one of {JSON_SUFFIXES + PARQUET_SUFFIXES}",
                    path=str(path))


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.lower().endswith(JSON_SUFFIXES + PARQUET_SUFFIXES)


def load_rows(path_or_name: str | os.PathLike, split: str = "train", cache_dir: str | None = None) -> Rows:
    """Rows of a local file/folder or a hub dataset (``owner/name``); an empty dataset is a DataError."""
    name = os.fspath(path_or_name)
    path = Path(name).expanduser()
    if path.exists():
        loaded = _load_local(path, split, cache_dir)
    elif _looks_like_path(name):
        raise DataError("dataset file not found", path=name)
    else:
        import datasets

        try:
            loaded = datasets.load_dataset(name, split=split, cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - offline, unknown name, bad split: one clear line
            raise DataError(f"cannot load hub dataset (split {split!r}): {type(exc).__name__}: {exc}",
                            path=name) from exc
    rows = Rows(loaded, name)
    if len(rows) == 0:
        raise DataError("the dataset is empty", path=name)
    return rows


class Rows:
    """Plain-dict rows of a loaded ``datasets.Dataset`` (or a parsed list), iterated in batches."""

    def __init__(self, data: Any, source: str, batch_size: int = 1000):
        self.source = source
        self._data = data if isinstance(data, list) else _undecoded(data)
        self._batch_size = batch_size

    def __len__(self) -> int:
        return len(self._data)

    @property
    def columns(self) -> list[str]:
        """Column names (the first row's keys for parsed JSON)."""
        if isinstance(self._data, list):
            return list(self._data[0]) if self._data else []
        return list(self._data.column_names)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if isinstance(self._data, list):
            yield from self._data
            return
        for batch in self._data.iter(batch_size=self._batch_size):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                yield dict(zip(columns, values))
