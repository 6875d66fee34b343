"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression grounding: Acc@IoU >= 0.5.

Data: JSONL rows with ``image``, the expression (``sent``, ``sentence``, ``expression``, ``text`` or
``question``) and the ground-truth ``bbox`` (``[x1, y1, x2, y2]`` pixels, or COCO ``[x, y, w, h]``
with ``--bbox-format xywh``); ``width``/``height`` are needed when predicted boxes are relative.
Scoring input: rows with the model's answer ``text``, ``bbox`` and (for relative boxes) the size.

The predicted box is the first ``[x1, y1, x2, y2]`` in the answer (Qwen2.5-VL's
``{"bbox_2d": [...]}`` included), read as pixels (``--box-scale abs``), fractions of the image
(``unit``, LLaVA-1.5's habit) or thousandths (``thousand``).  An answer without a box scores IoU 0.
Metrics: ``acc_iou50`` (share of IoU >= 0.5) and ``mean_iou``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.eval.bootstrap import bootstrap, safe_div
from prefopt.eval.common import Benchmark, EvalItem, EvalOptions, answer_text, first, item_id, read_records
from prefopt.rewards.grounding import iou, parse_boxes

PROMPT = "Give the bounding box of the region this sentence describes, as [x1, y1, x2, y2]: {}"
SCALES = {"abs": None, "unit": 1.0, "thousand": 1000.0}


def gt_box(row: dict[str, Any], fmt: str, path: str | Path, line: int) -> list[float]:
    """The ground-truth box as ``[x1, y1, x2, y2]``."""
    box = row.get("bbox")
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise DataError(f"'bbox' must be a list of 4 numbers, got {box!r}", path=str(path), row=line)
    try:
        x, y, a, b = (float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise DataError(f"'bbox' must hold numbers, got {box!r}", path=str(path), row=line) from err
    if fmt == "xywh":
        return [x, y, x + a, y + b]
    if fmt != "xyxy":
        raise DataError(f"unknown bbox format '{fmt}' (xyxy or xywh)")
    return [x, y, a, b]


def predicted_box(answer: str, scale: str, size: tuple[float, float] | None) -> list[float] | None:
    """The first box in ``answer`` in pixels (``size`` = (width, height) for relative scales)."""
    boxes = parse_boxes(answer)
    if not boxes:
        return None
    box = list(boxes[0])
    if SCALES[scale] is None:
        return box
    w, h = size  # type: ignore[misc]
    s = SCALES[scale]
    return [box[0] / s * w, box[1] / s * h, box[2] / s * w, box[3] / s * h]


def grounding_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Acc@IoU>=0.5 and mean IoU of rows holding ``iou``."""
    return {
        "acc_iou50": safe_div(sum(r["iou"] >= 0.5 for r in rows), len(rows)),
        "mean_iou": safe_div(sum(r["iou"] for r in rows), len(rows)),
    }


class RefCOCO(Benchmark):
    """Referring-expression grounding."""

    name = "refcoco"
    max_new_tokens = 64

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """Expressions with their boxes (stored as ``[x1, y1, x2, y2]``)."""
        items = []
        for line, row in read_records(path):
            sent = first(row, ("sent", "sentence", "expression", "text", "question"), path, line)
            image = first(row, ("image",), path, line)
            meta = {
                "image": image,
                "sent": sent,
                "bbox": gt_box(row, opts.bbox_format, path, line),
                "bbox_format": "xyxy",
            }
            for key in ("width", "height"):
                if row.get(key) is not None:
                    meta[key] = row[key]
            items.append(EvalItem(item_id(row, line), PROMPT.format(sent), [image], meta))
        return items

    def note_images(self, item: EvalItem, images: list[Any]) -> None:
        """Keep the image size: relative predicted boxes (``--box-scale unit|thousand``) are scaled by it."""
        if images and "width" not in item.meta:
            item.meta["width"], item.meta["height"] = images[0].size

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """IoU of the answer's box with the ground truth."""
        if opts.box_scale not in SCALES:
            raise DataError(f"unknown box scale '{opts.box_scale}' (one of {sorted(SCALES)})")
        answer = answer_text(row, path, line)
        gt = gt_box(row, row.get("bbox_format", opts.bbox_format), path, line)
        size = None
        if SCALES[opts.box_scale] is not None:
            size = (float(first(row, ("width",), path, line)), float(first(row, ("height",), path, line)))
        box = predicted_box(answer, opts.box_scale, size)
        return {"id": item_id(row, line), "iou": iou(box, gt) if box else 0.0, "parsed": box is not None}

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """Grounding accuracy with intervals."""
        return {
            "benchmark": self.name,
            "n": len(rows),
            "n_unparsed": sum(not r["parsed"] for r in rows),
            "metrics": bootstrap(rows, grounding_metrics, rounds=opts.rounds, seed=opts.seed),
        }
