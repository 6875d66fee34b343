"""Bad training rows are skipped and counted, not fatal, up to a share of the data (``data.max_bad_fraction``).

A long run should not die at step 9000 over one corrupt image, and it should not train on a dataset that is
mostly broken either. Training commands therefore read their data through a :class:`BadRows` tracker:

- the format readers (:func:`prefopt.data.formats._parse`) record a row that fails its checks (missing field,
  wrong type, missing image file, ...) instead of raising, while :func:`tolerate` is active;
- :meth:`BadRows.screen` runs further per-example checks on what was read (images that do not decode,
  identical chosen/rejected pairs, ...) and drops the examples that fail them;
- :meth:`BadRows.check` then stops with one line naming the file, the count and the first bad rows when more
  than ``max_fraction`` of the rows are bad, and otherwise logs one warning with the count.

Row numbers are 1-based (the first data row is row 1), everywhere a user reads them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from prefopt.errors import DataError, ImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRACTION = 0.01
SHOWN = 3  # bad rows quoted in the error line / warning

_ACTIVE: ContextVar[BadRows | None] = ContextVar("prefopt_bad_rows", default=None)


def _reason(err: Exception) -> str:
    """The message of ``err`` without the ``path, row N:`` prefix DataError adds (the tracker adds its own)."""
    return getattr(err, "reason", None) or str(err)


class BadRows:
    """Which rows of one data file were skipped and why; see the module docstring."""

    def __init__(self, source: str, max_fraction: float = DEFAULT_MAX_BAD_FRACTION, key: str = "data"):
        if not 0.0 <= float(max_fraction) < 1.0:
            from prefopt.config import ConfigError

            raise ConfigError(f"{key}.max_bad_fraction must be in [0, 1), got {max_fraction}")
        self.source = str(source)
        self.max_fraction = float(max_fraction)
        self.key = key
        self.total = 0  # rows in the file
        self.bad: dict[int, str] = {}  # 0-based row -> reason
        self.rows: list[int] = []  # 0-based source row of every example still kept, in order

    # --- recording ---------------------------------------------------------------------------------
    def record(self, row: int, err: Exception | str) -> None:
        """Mark 0-based ``row`` bad (the first reason given for a row is kept)."""
        self.bad.setdefault(int(row), err if isinstance(err, str) else _reason(err))

    def parsed(self, total: int, kept: Sequence[int]) -> None:
        """Called by the reader: ``total`` rows read, ``kept`` the 0-based rows that parsed."""
        self.total = int(total)
        self.rows = list(kept)

    def adopt(self, examples: Sequence[Any]) -> None:
        """Start tracking ``examples`` read without :func:`tolerate` (every row good, one example per row)."""
        self.total = self.total or len(examples)
        self.rows = list(range(len(examples)))

    def screen(self, examples: Sequence[Any], check: Callable[[Any], Any]) -> list[Any]:
        """Keep the examples for which ``check(example)`` raises no DataError; return what ``check`` returns
        (or the example itself when it returns None)."""
        if len(self.rows) != len(examples):
            self.adopt(examples)
        kept, rows = [], []
        for example, row in zip(examples, self.rows, strict=True):
            try:
                value = check(example)
            except DataError as err:
                if type(err).__name__ == "RefusedRow":  # the recipe asked to stop at such a row, not skip it
                    raise DataError(_reason(err), path=self.source, row=row + 1) from None
                self.record(row, err)
                continue
            kept.append(example if value is None else value)
            rows.append(row)
        self.rows = rows
        return kept

    def truncate(self, examples: list[Any], limit: int | None) -> list[Any]:
        """The first ``limit`` examples (``max_samples``); rows after the last one kept no longer count."""
        if limit is None or len(examples) <= limit:
            return examples
        cutoff = self.rows[limit - 1] + 1 if limit > 0 else 0
        self.bad = {row: why for row, why in self.bad.items() if row < cutoff}
        self.total = cutoff
        self.rows = self.rows[:limit]
        return examples[:limit]

    # --- reporting ---------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.bad)

    def examples(self, n: int = SHOWN) -> list[str]:
        """``row N: reason`` for the first ``n`` bad rows (1-based)."""
        return [f"row {row + 1}: {self.bad[row]}" for row in sorted(self.bad)[:n]]

    def grouped(self, n: int = SHOWN) -> str:
        """The first ``n`` distinct reasons, each with its (1-based) rows: ``rows 1, 2, 3 (+5 more): reason``."""
        groups: dict[str, list[int]] = {}
        for row in sorted(self.bad):
            groups.setdefault(self.bad[row], []).append(row + 1)
        parts = []
        for reason, rows in list(groups.items())[:n]:
            shown = ", ".join(str(r) for r in rows[:n])
            more = f" (+{len(rows) - n} more)" if len(rows) > n else ""
            parts.append(f"{'row' if len(rows) == 1 else 'rows'} {shown}{more}: {reason}")
        if len(groups) > n:
            parts.append(f"and {len(groups) - n} other reasons")
        return "; ".join(parts)

    def check(self) -> None:
        """Raise DataError when more than ``max_fraction`` of the rows are bad; warn when any are."""
        if not self.bad:
            return
        total = max(self.total, self.count)
        share = self.count / total
        first = self.grouped()
        if share > self.max_fraction:
            raise DataError(
                f"{self.count} of {total} rows are bad ({share:.1%}, more than {self.key}.max_bad_fraction="
                f"{self.max_fraction:g}); first: {first}",
                path=self.source,
            )
        logger.warning("%s: skipped %d of %d bad rows (%.2f%%): %s", self.source, self.count, total,
                       100 * share, first)

    def summary(self) -> dict[str, Any]:
        """The counts for ``run_info.json``."""
        return {
            "path": self.source,
            "rows": self.total,
            "bad_rows": self.count,
            "max_bad_fraction": self.max_fraction,
            "first_bad": self.examples(10),
        }


def read_tolerant(tracker: BadRows, read: Callable[[], Sequence[Any]]) -> list[Any]:
    """``read()`` with bad rows recorded in ``tracker`` (see :func:`tolerate`) rather than raised."""
    with tolerate(tracker):
        examples = list(read())
    if len(tracker.rows) != len(examples):  # a reader that does not go through the format parser
        tracker.adopt(examples)
    return examples


@contextlib.contextmanager
def tolerate(tracker: BadRows) -> Iterator[BadRows]:
    """While active, the format readers record bad rows in ``tracker`` instead of raising."""
    token = _ACTIVE.set(tracker)
    try:
        yield tracker
    finally:
        _ACTIVE.reset(token)


def active() -> BadRows | None:
    """The tracker of the enclosing :func:`tolerate`, if any."""
    return _ACTIVE.get()


# --- per-example checks ----------------------------------------------------------------------------------
def verify_image(src: Any) -> None:
    """Raise ImageError unless ``src`` (path, bytes or PIL image) holds an image PIL can read.

    ``Image.verify`` checks the file's structure (chunk CRCs for PNG) without decoding the pixels, so the
    whole dataset can be checked before training at a fraction of the cost of decoding it.
    """
    from PIL import Image

    if isinstance(src, Image.Image):
        return
    if isinstance(src, dict):
        src = src.get("bytes") or src.get("path")
    name = f"from {len(src)} bytes" if isinstance(src, bytes | bytearray) else str(src)
    try:
        if isinstance(src, bytes | bytearray):
            if not src:
                raise ImageError("cannot decode image from bytes: the bytes are empty")
            handle: Any = io.BytesIO(bytes(src))
        else:
            path = os.fspath(src)
            if not os.path.isfile(path):
                raise ImageError(f"image file not found: {path}")
            if os.path.getsize(path) == 0:
                raise ImageError(f"cannot decode image {path}: the file is empty")
            handle = open(path, "rb")  # noqa: SIM115  (closed below)
        with handle:
            with Image.open(handle) as img:
                img.verify()
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many kinds (SyntaxError, OSError, struct.error, ...) for bad files
        raise ImageError(f"cannot decode image {name}: {exc}") from exc


def example_images(example: Any) -> list[Any]:
    """Every image a prompt, conversation or preference record names."""
    images = list(getattr(example, "images", None) or [])
    for name in ("image", "contrastive_image"):
        value = getattr(example, name, None)
        if value is not None:
            images.append(value)
    return images


def check_images(example: Any) -> None:
    """:func:`verify_image` on every image of ``example``."""
    for src in example_images(example):
        verify_image(src)
