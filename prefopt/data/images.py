"""Image loading and media-path resolution shared by every reader, trainer and evaluator.

Records keep images undecoded (a resolved path string or raw encoded bytes) so that a dataset of
hundreds of thousands of rows stays small in memory; :func:`load_image` decodes one when it is needed.
Relative media paths in a dataset file are resolved under an *image root*; a path that would escape
that root (an absolute path elsewhere, or ``..`` components) is refused, so a dataset file cannot make the
trainer read arbitrary files.
"""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image, UnidentifiedImageError

from prefopt.errors import ImageError


def resolve_media_path(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """The path of a media file named in a dataset, resolved under ``root`` (``None``: as given)."""
    text = os.fspath(path)
    if not text:
        raise ImageError("empty media path")
    if root is None:
        return text
    root_text = os.fspath(root)
    if getattr(root, "fence", True) is False:
        # the data file's own folder (prefopt.data.paths.MediaRoot): a base for relative paths, not a fence
        return text if os.path.isabs(text) else os.path.normpath(os.path.join(root_text, text))
    # Lexical normalisation (not realpath): a root that is itself a symlinked folder must keep working,
    # while "a/../../etc/passwd" must not slip out of it. An absolute path is accepted only inside the
    # root, which makes resolving an already-resolved record path a no-op.
    root_norm = os.path.normpath(os.path.abspath(root_text))
    joined = os.path.normpath(os.path.join(root_norm, text))
    if os.path.commonpath([root_norm, joined]) != root_norm:
        kind = "absolute media path" if os.path.isabs(text) else "media path"
        raise ImageError(f"{kind} {text!r} escapes the image root {root_text!r}")
    return joined


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy; transparent pixels become white (a plain convert would turn them black)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _decode(data: bytes, what: str) -> Image.Image:
    """Decode encoded image bytes fully (``load`` catches truncated files that ``open`` accepts)."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode image {what}: {exc}") from exc
    return _to_rgb(img)


def _read_file(path: str, root: str | os.PathLike | None) -> Image.Image:
    resolved = resolve_media_path(path, root)
    if not os.path.isfile(resolved):
        where = f" (image root {os.fspath(root)!r})" if root is not None else ""
        raise ImageError(f"image file not found: {resolved}{where}")
    with open(resolved, "rb") as fh:
        data = fh.read()
    if not data:
        raise ImageError(f"cannot decode image {resolved}: the file is empty")
    return _decode(data, resolved)


def load_image(src: Any, root: str | os.PathLike | None = None) -> Image.Image:
    """Decode an image given as a path, raw bytes, a ``{"bytes", "path"}`` dict or a PIL image, as RGB."""
    if isinstance(src, Image.Image):
        return _to_rgb(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if not len(src):
            raise ImageError("cannot decode image from bytes: the bytes are empty")
        return _decode(bytes(src), f"from {len(src)} bytes")
    if isinstance(src, dict):
        # The datasets ``Image`` feature layout: bytes win when present, the path names them.
        data, path = src.get("bytes"), src.get("path")
        if data:
            return _decode(bytes(data), f"from bytes ({path})" if path else f"from {len(data)} bytes")
        if path:
            return _read_file(path, root)
        raise ImageError("image dict has neither 'bytes' nor 'path'")
    if isinstance(src, (str, os.PathLike)):
        return _read_file(os.fspath(src), root)
    raise ImageError(f"cannot load an image from a {type(src).__name__}")
