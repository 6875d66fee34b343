"""Errors that prefopt reports to the user as one clear line instead of a stack trace."""

from __future__ import annotations


class PrefoptError(Exception):
    """Base class: the CLI prints these as ``prefopt CMD: error: MESSAGE`` and exits with status 2."""


class DataError(PrefoptError, ValueError):
    """A dataset file or row that cannot be used; the message names the file and the (1-based) row."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.row = row
        self.reason = message  # the message without the "path, row N: " prefix


class ImageError(DataError):
    """An image or video that is missing, corrupt or outside the image root."""


class ModelError(PrefoptError, ValueError):
    """A model directory, family or checkpoint that cannot be used."""
