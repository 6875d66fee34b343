"""Box overlap for grounding (SPEC 1.2, 2): IoU, GIoU, the GIoU score ``(GIoU + 1) / 2``, box parsing.

Boxes are ``(x1, y1, x2, y2)`` in pixels with ``x1 <= x2`` and ``y1 <= y2``; a box given with swapped
corners is reordered. Degenerate boxes (zero area) are allowed: their IoU with anything is 0 unless both
are the same degenerate box.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Box = tuple[float, float, float, float]

_NUM = r"[-+]?\d+(?:\.\d+)?"
_BOX = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")


def _ordered(box: Sequence[float]) -> Box:
    if len(box) != 4:
        raise ValueError(f"a box needs 4 numbers [x1, y1, x2, y2], got {list(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _area(b: Box) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def _intersection(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes."""
    a, b = _ordered(a), _ordered(b)
    if a == b:
        return 1.0
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def giou(a: Sequence[float], b: Sequence[float]) -> float:
    """Generalised IoU: ``IoU - (|C| - |A ∪ B|) / |C|`` with C the smallest box enclosing both (in [-1, 1])."""
    a, b = _ordered(a), _ordered(b)
    if a == b:
        return 1.0
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if hull <= 0:
        return 0.0
    base = inter / union if union > 0 else 0.0
    return base - (hull - union) / hull


def giou_score(a: Sequence[float], b: Sequence[float]) -> float:
    """GIoU mapped to [0, 1]: ``(giou + 1) / 2``."""
    return (giou(a, b) + 1.0) / 2.0


def parse_boxes(text: str) -> list[Box]:
    """Every ``[x1, y1, x2, y2]`` box written in ``text``, in order."""
    return [_ordered([float(v) for v in m]) for m in _BOX.findall(text or "")]


def parse_box(text: str) -> Box | None:
    """The last ``[x1, y1, x2, y2]`` box written in ``text``, or None when there is none."""
    boxes = parse_boxes(text)
    return boxes[-1] if boxes else None
