"""Where a dataset's media files are: one rule for every command (sft, grpo, select, symmpo, eval, generate).

A relative media path in a data file resolves against the explicit ``image_root`` when one is given, else
against **the data file's own folder** (never the current directory), so a recipe runs the same from any
folder. An explicit image root is a fence: a path that leaves it is refused. The data file's folder is only
a base: absolute paths and ``..`` are taken as written, as they would be by the tool that wrote the file
(``prefopt select`` writes absolute paths into ``selected.json`` so that it feeds ``grpo data.path=`` as is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prefopt.data.loaders import _looks_like_path
from prefopt.errors import DataError

__all__ = ["MediaRoot", "check_data_path", "media_root"]


@dataclass(frozen=True)
class MediaRoot:
    """A folder relative media paths resolve under; ``fence``: refuse paths that leave it."""

    folder: str
    fence: bool = True

    def __fspath__(self) -> str:
        return self.folder

    def __str__(self) -> str:
        return self.folder


def media_root(data_path: str | os.PathLike | None, image_root: str | os.PathLike | None) -> MediaRoot | None:
    """The root of a data file's media: ``image_root`` (fenced) if given, else the file's folder, else None."""
    if image_root is not None and os.fspath(image_root) != "":
        if isinstance(image_root, MediaRoot):
            return image_root
        return MediaRoot(os.path.abspath(os.fspath(image_root)), fence=True)
    if data_path is None:
        return None
    path = Path(os.fspath(data_path)).expanduser()
    if path.is_file():
        return MediaRoot(str(path.resolve().parent), fence=False)
    if path.is_dir():
        return MediaRoot(str(path.resolve()), fence=False)
    return None  # a hub dataset: its media come as bytes


def check_data_path(path: str, image_root: str | None, key: str = "data.path", where: str = "config") -> None:
    """Refuse, before any model is loaded, an empty or missing data file and an image root that is no folder."""
    if not path:
        raise DataError(f"{where}: {key} is empty: give a data file")

    p = Path(path).expanduser()
    if not p.exists() and (_looks_like_path(path) or os.sep in path and not _hub_like(path)):
        raise DataError(f"{where}: {key}: data file not found: {path}")
    if image_root:
        root = Path(image_root).expanduser()
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise DataError(f"{where}: data.image_root {image_root} {what}")


def _hub_like(name: str) -> bool:
    """``owner/name`` (one slash, no suffix): possibly a hub dataset id."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


MEDIA_KEYS = ("path", "image", "images", "video", "videos", "image_1", "image_2")


def with_absolute_media(row: dict, root: MediaRoot | None, keys: tuple[str, ...] = MEDIA_KEYS) -> dict:
    """A copy of a raw row whose relative media paths are absolute (so the row works from any folder)."""
    if root is None:
        return dict(row)

    def fix(value):
        if isinstance(value, str) and value and not os.path.isabs(value):
            return os.path.normpath(os.path.join(root.folder, value))
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return {k: fix(v) if k in keys else v for k, v in row.items()}
