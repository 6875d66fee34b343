"""CHAIR (Rohrbach et al., 2018): hallucinated COCO objects in generated captions.

Data, either
- a COCO instances json (``images``, ``annotations``, ``categories``): one captioning question per
  image, ground truth = the categories annotated on it; or
- JSONL rows ``{"image", "objects": [...]}`` (optionally ``image_id``, ``prompt``), or rows with only
  ``image_id`` when ``--annotations`` names a COCO instances json.
Scoring input: prediction rows with the caption (``text`` or ``caption``) and ``objects`` or
``image_id`` (resolved through ``--annotations``).

Object mentions: captions are lower-cased, split into words, each word lemmatised with the rules
of :func:`lemmatize` (plural -> singular, irregular nouns), then matched against
:data:`~prefopt.eval.coco_synonyms.COCO_SYNONYMS` longest phrase first ("hot dog" before "dog").
Departures from the original script: no caption-derived ground truth and no special cases for
"toilet seat"-like compounds beyond the table.
- CHAIRs = captions with >= 1 hallucinated object / captions with >= 1 object mention (SPEC 6)
- CHAIRi = hallucinated mentions / all mentions (every mention counts, repeats included)
- recall (cover) = ground-truth objects mentioned / ground-truth objects (summed over captions)
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.eval.bootstrap import bootstrap, safe_div
from prefopt.eval.coco_synonyms import COCO_SYNONYMS
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    answer_text,
    item_id,
    read_json,
    read_records,
)

DEFAULT_PROMPT = "Please describe this image in detail."
IRREGULAR = {
    "people": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "mice": "mouse",
    "knives": "knife",
    "buses": "bus",
    "skis": "ski",
    "oxen": "ox",
    "geese": "goose",
    "teeth": "tooth",
    "feet": "foot",
    "calves": "calf",
    "leaves": "leaf",
    "wolves": "wolf",
    "ponies": "pony",
    "puppies": "puppy",
    "kitties": "kitty",
    "ladies": "lady",
    "babies": "baby",
}
_KEEP_S = ("ss", "us", "is")


def lemmatize(word: str) -> str:
    """A singular form of ``word``: irregular table, then -ies -> -y, -(ss|x|ch|sh)es -> -, -s -> -."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) <= 3:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(_KEEP_S):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lower-cased, lemmatised words of ``text``."""
    return [lemmatize(w) for w in re.findall(r"[a-z]+", text.lower())]


def load_vocabulary(path: str | Path) -> dict[str, list[str]]:
    """``{class: [synonyms]}`` from a JSON file: that mapping itself, or an object holding it under
    ``synonyms`` (as ``prefopt make-data`` writes ``world.json``)."""
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("synonyms"), dict):
        data = data["synonyms"]
    valid = isinstance(data, dict) and data and all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v) for k, v in data.items()
    )
    if not valid:
        raise DataError("a vocabulary is a JSON object {class: [synonym, ...]} (or one under 'synonyms')", path=str(path))
    return data


@lru_cache(maxsize=8)
def phrase_table(vocabulary: str | None = None) -> tuple[dict[tuple[str, ...], str], int]:
    """``({lemmatised phrase: class}, longest phrase length)`` built from the synonym table: COCO's, or
    the one in the ``vocabulary`` JSON file."""
    synonyms = COCO_SYNONYMS if vocabulary is None else load_vocabulary(vocabulary)
    table: dict[tuple[str, ...], str] = {}
    for cls, names in synonyms.items():
        for phrase in [cls, *names]:
            table[tuple(words(phrase))] = cls
    return table, max(len(k) for k in table)


def mentioned_objects(text: str, vocabulary: str | None = None) -> list[str]:
    """Classes mentioned in ``text``, in order, one entry per mention (longest match first)."""
    table, longest = phrase_table(vocabulary)
    tokens, found, i = words(text), [], 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            cls = table.get(tuple(tokens[i : i + n]))
            if cls is not None:
                found.append(cls)
                i += n
                break
        else:
            i += 1
    return found


def to_class(name: str, path: str | Path, line: int, vocabulary: str | None = None) -> str:
    """The class of a ground-truth object name (class name or synonym)."""
    table, _ = phrase_table(vocabulary)
    cls = table.get(tuple(words(name)))
    if cls is None:
        where = "COCO class" if vocabulary is None else f"class of the vocabulary {vocabulary}"
        raise DataError(f"ground-truth object '{name}' is not a {where} or synonym", path=str(path), row=line)
    return cls


def coco_objects(path: str | Path) -> tuple[dict[str, set[str]], dict[str, str]]:
    """``({image_id: {class}}, {image_id: file_name})`` from a COCO instances json."""
    data = read_json(path)
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataError("not a COCO instances json (needs images, annotations, categories)", path=str(path))
    names = {c["id"]: c["name"] for c in data["categories"]}
    objects: dict[str, set[str]] = {str(img["id"]): set() for img in data["images"]}
    files = {str(img["id"]): img.get("file_name", "") for img in data["images"]}
    for i, ann in enumerate(data["annotations"], start=1):
        if ann.get("category_id") not in names or "image_id" not in ann:
            raise DataError("annotation without a known category_id/image_id", path=str(path), row=i)
        objects.setdefault(str(ann["image_id"]), set()).add(to_class(names[ann["category_id"]], path, i))
    return objects, files


def chair_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """CHAIRs, CHAIRi and recall of rows holding ``mentions`` (list) and ``gt`` (list of classes)."""
    with_obj = hallu_caps = mentions = hallu = covered = gt_total = 0
    for row in rows:
        gt = set(row["gt"])
        bad = [m for m in row["mentions"] if m not in gt]
        with_obj += bool(row["mentions"])
        hallu_caps += bool(bad)
        mentions += len(row["mentions"])
        hallu += len(bad)
        covered += len(gt & set(row["mentions"]))
        gt_total += len(gt)
    return {
        "chair_s": safe_div(hallu_caps, with_obj),
        "chair_i": safe_div(hallu, mentions),
        "recall": safe_div(covered, gt_total),
    }


class Chair(Benchmark):
    """CHAIR on COCO-style captions."""

    name = "chair"
    max_new_tokens = 512

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """Captioning questions from a COCO instances json or a JSONL with ground-truth objects."""
        if Path(path).suffix.lower() == ".json":
            objects, files = coco_objects(path)
            return [
                EvalItem(
                    i,
                    DEFAULT_PROMPT,
                    [files[i]],
                    {"image_id": i, "image": files[i], "objects": sorted(objects[i])},
                )
                for i in files
            ]
        known = coco_objects(opts.annotations)[0] if opts.annotations else None
        items = []
        for line, row in read_records(path):
            gt = self._ground_truth(row, path, line, known, opts.vocabulary)
            if "image" not in row:
                raise DataError("missing key 'image'", path=str(path), row=line)
            meta = {"image_id": row.get("image_id"), "image": row["image"], "objects": gt}
            items.append(
                EvalItem(
                    item_id(row, line, ("image_id", "id")),
                    row.get("prompt", DEFAULT_PROMPT),
                    [row["image"]],
                    meta,
                )
            )
        return items

    def _ground_truth(
        self,
        row: dict,
        path: str | Path,
        line: int,
        known: dict[str, set[str]] | None,
        vocabulary: str | None = None,
    ) -> list:
        if isinstance(row.get("objects"), list):
            return sorted({to_class(str(o), path, line, vocabulary) for o in row["objects"]})
        if known is not None and str(row.get("image_id")) in known:
            return sorted(known[str(row["image_id"])])
        raise DataError(
            "no ground truth: give 'objects' or an 'image_id' found in --annotations",
            path=str(path),
            row=line,
        )

    def read_predictions(self, path: str | Path, opts: EvalOptions) -> list[dict[str, Any]]:
        """Caption rows, ground truth resolved through ``--annotations`` when rows lack ``objects``."""
        known = coco_objects(opts.annotations)[0] if opts.annotations else None
        out = []
        for line, row in read_records(path):
            caption = row["caption"] if isinstance(row.get("caption"), str) else answer_text(row, path, line)
            out.append(
                {
                    "id": item_id(row, line, ("id", "image_id")),
                    "caption": caption,
                    "mentions": mentioned_objects(caption, opts.vocabulary),
                    "gt": self._ground_truth(row, path, line, known, opts.vocabulary),
                }
            )
        return out

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """One caption row (ground truth from ``objects``)."""
        caption = answer_text(row, path, line)
        return {
            "id": item_id(row, line),
            "caption": caption,
            "mentions": mentioned_objects(caption, opts.vocabulary),
            "gt": self._ground_truth(row, path, line, None, opts.vocabulary),
        }

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """CHAIR metrics with intervals; per-caption mentions go to ``chair_details.jsonl``."""
        if out_dir is not None:
            with (out_dir / "chair_details.jsonl").open("w", encoding="utf-8") as fh:
                for r in rows:
                    bad = sorted({m for m in r["mentions"] if m not in set(r["gt"])})
                    fh.write(json.dumps({**r, "hallucinated": bad}, ensure_ascii=False) + "\n")
        return {
            "benchmark": self.name,
            "n": len(rows),
            "n_mentions": sum(len(r["mentions"]) for r in rows),
            "metrics": bootstrap(rows, chair_metrics, rounds=opts.rounds, seed=opts.seed),
        }
