"""COCO ground truth for CHAIR: instance classes per image and the reference captions of each image.

``--annotations`` is either a folder holding ``instances_val2014.json`` and ``captions_val2014.json``
(plus the ``*_train2014.json`` files when present: the standard script loads train and val) or one
COCO instances json (instances only).  Image ids are compared as text.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.eval.common import read_json


def _is_coco(path: str | Path) -> bool:
    """Whether ``path`` parses as a COCO instances json (rather than a JSON list of records)."""
    data = read_json(path)
    return isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data)


def instances_file(annotations: str | Path) -> Path:
    """The instances json of ``--annotations`` (the file itself, or ``instances_val2014.json`` in the folder)."""
    path = Path(annotations)
    if path.is_dir():
        path = path / "instances_val2014.json"
    if not path.is_file():
        raise DataError("COCO instances file not found (--annotations takes a folder holding "
                        "instances_val2014.json and captions_val2014.json, or an instances json)", path=str(path))
    return path


class CocoTruth:
    """Instance classes and reference captions of COCO images."""

    def __init__(self, annotations: str | Path, coco_objects: Callable[[Path], tuple[dict[str, set[str]], Any]]):
        """``coco_objects(instances_json)`` reads one instances file (``prefopt.eval.chair`` hands its own in)."""
        root = Path(annotations)
        self.folder = root.is_dir()
        first = instances_file(root)
        files = [first] + ([root / "instances_train2014.json"] if self.folder else [])
        self.instance_files = [f for f in files if f.is_file()]
        self.instances: dict[str, set[str]] = {}
        for f in self.instance_files:
            for image, classes in coco_objects(f)[0].items():
                self.instances.setdefault(image, set()).update(classes)
        self.caption_files: list[Path] = []
        if self.folder:
            val = root / "captions_val2014.json"
            if not val.is_file():
                raise DataError("no captions_val2014.json in the annotation folder (CHAIR's ground truth adds the "
                                "objects named in the COCO reference captions)", path=str(root))
            train = root / "captions_train2014.json"
            self.caption_files = [val] + ([train] if train.is_file() else [])

    @cached_property
    def _captions(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for path in self.caption_files:
            data = read_json(path)
            anns = data.get("annotations") if isinstance(data, dict) else None
            if not isinstance(anns, list):
                raise DataError("not a COCO captions json (no 'annotations' list)", path=str(path))
            for i, ann in enumerate(anns, start=1):
                if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
                    raise DataError("caption annotation without image_id/caption", path=str(path), row=i)
                out.setdefault(str(ann["image_id"]), []).append(ann["caption"])
        return out

    def references(self, image_id: Any) -> list[str]:
        """The COCO reference captions of ``image_id`` (none without a captions file)."""
        return self._captions.get(str(image_id), []) if image_id is not None else []

    def describe(self) -> str:
        """Which files the ground truth came from (for metrics.json)."""
        names = [f.name for f in self.instance_files + self.caption_files]
        kind = "instances + reference captions" if self.caption_files else "instances only"
        return f"{kind} ({', '.join(names)})"
