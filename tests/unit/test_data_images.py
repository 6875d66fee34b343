"""Image loading and media-path resolution: every source kind, and every way it can go wrong."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from prefopt.data.images import load_image, resolve_media_path
from prefopt.errors import DataError, ImageError


def _png_bytes(size=(6, 4), colour=(10, 200, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def root(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "imgs" / "sub" / "a.png").write_bytes(_png_bytes())
    return tmp_path / "imgs"


def test_resolve_relative_under_root(root):
    assert resolve_media_path("sub/a.png", root) == str(root / "sub" / "a.png")
    assert resolve_media_path("./sub/../sub/a.png", root) == str(root / "sub" / "a.png")
    # Idempotent: a path a reader already resolved stays as it is.
    resolved = resolve_media_path("sub/a.png", root)
    assert resolve_media_path(resolved, root) == resolved
    with pytest.raises(ImageError, match="escapes"):  # a sibling sharing the root's name as a prefix
        resolve_media_path(str(root) + "-evil/a.png", root)


def test_resolve_without_root_keeps_path():
    assert resolve_media_path("x/y.png", None) == "x/y.png"
    assert resolve_media_path("/abs/y.png", None) == "/abs/y.png"


@pytest.mark.parametrize("bad", ["../outside.png", "sub/../../outside.png", "/etc/passwd", "../imgs-evil/a.png"])
def test_resolve_refuses_escape(root, bad):
    with pytest.raises(ImageError) as info:
        resolve_media_path(bad, root)
    assert bad in str(info.value) and str(root) in str(info.value)
    assert isinstance(info.value, DataError)  # the CLI reports it as one line


def test_load_from_every_source_kind(root):
    data = _png_bytes()
    from_path = load_image("sub/a.png", root=root)
    assert from_path.mode == "RGB" and from_path.size == (6, 4)
    assert from_path.getpixel((0, 0)) == (10, 200, 30)
    assert load_image(str(root / "sub" / "a.png")).getpixel((1, 1)) == (10, 200, 30)
    assert load_image(data).getpixel((2, 2)) == (10, 200, 30)
    assert load_image({"bytes": data, "path": "ignored.png"}).size == (6, 4)
    assert load_image({"bytes": None, "path": "sub/a.png"}, root=root).size == (6, 4)
    grey = Image.new("L", (3, 3), 7)
    assert load_image(grey).getpixel((0, 0)) == (7, 7, 7)


def test_transparent_pixels_become_white():
    img = load_image(_png_bytes(mode="RGBA", colour=(0, 0, 0, 0)))
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)


def test_missing_file_names_path_and_root(root):
    with pytest.raises(ImageError, match="not found") as info:
        load_image("sub/missing.png", root=root)
    assert os.path.join("sub", "missing.png") in str(info.value) and str(root) in str(info.value)


@pytest.mark.parametrize("payload", [b"not an image at all", _png_bytes()[:40]])
def test_corrupt_or_truncated_image(root, payload):
    (root / "bad.png").write_bytes(payload)
    with pytest.raises(ImageError, match=r"cannot decode image .*bad\.png"):
        load_image("bad.png", root=root)
    with pytest.raises(ImageError, match="cannot decode image from"):
        load_image(payload)


def test_empty_inputs_and_wrong_types(root):
    (root / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image("empty.png", root=root)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="neither"):
        load_image({"bytes": None, "path": None})
    with pytest.raises(ImageError, match="int"):
        load_image(42)
