"""CHAIR (Rohrbach et al., 2018): hallucinated COCO objects in generated captions.

Data, either
- a COCO instances json (``images``, ``annotations``, ``categories``): one captioning question per
  image, ground truth = the categories annotated on it; or
- JSONL rows ``{"image", "objects": [...]}`` (optionally ``image_id``, ``prompt``), or rows with only
  ``image_id`` when ``--annotations`` names COCO annotations.
Scoring input: rows with the caption (``caption`` or ``text``) and ``objects`` or ``image_id``, e.g.
``prefopt eval chair --predictions CAPS.jsonl --annotations ANN_DIR --out DIR`` with CAPS lines
``{"image_id", "caption"}`` and ANN_DIR holding ``instances_val2014.json`` and ``captions_val2014.json``
(the ``*_train2014.json`` files too when present, as the script loads both).

``--scoring official`` (default) is the standard ``chair.py``: mentions read by
:mod:`prefopt.eval.chair_official`; ground truth = instance classes + the classes that reader finds in
the image's COCO reference captions;
- CHAIRs = captions with >= 1 hallucinated mention / all captions
- CHAIRi = hallucinated mentions / all mentions (repeats included)
- Recall = ground-truth classes mentioned / ground-truth classes (summed over captions).
Deviations, all on inputs the script mishandles: an image id missing from the annotations is an error
(the script gives it no objects), and ids compare as text ("42" == 42).

``--scoring robust`` is prefopt's reading: words lemmatised by :func:`lemmatize`, matched longest
phrase first against :data:`~prefopt.eval.coco_synonyms.COCO_SYNONYMS` ("pickup truck" is one truck,
a lone "bus" is a bus); reference captions read the same way; CHAIRs divides by the captions that
mention at least one object.  ``parse_disagreements`` counts captions whose mentioned classes differ.

With ``--vocabulary`` (a custom world such as the demo's shapes) both scorings read mentions with
prefopt's matcher over that vocabulary and differ only in the CHAIRs denominator.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefopt.errors import DataError, PrefoptError
from prefopt.eval.bootstrap import bootstrap, safe_div
from prefopt.eval.chair_official import caption_objects, tokenizer_name
from prefopt.eval.coco_synonyms import COCO_SYNONYMS
from prefopt.eval.coco_truth import CocoTruth, _is_coco
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    answer_text,
    check_scoring,
    item_id,
    read_json,
    read_records,
    scoring_summary,
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


#: words that name a person alone but qualify the next object ("baby elephant", "passenger jet")
QUALIFIERS = frozenset({"baby", "adult", "passenger"})
#: two-word places named after an object that are not that object ("train tracks" hold no train)
NON_OBJECTS = frozenset({("train", "track"), ("train", "station"), ("bus", "stop"), ("bus", "station"), ("home", "plate")})


def _match(table: dict, longest: int, tokens: list[str], i: int) -> tuple[str | None, int]:
    for n in range(min(longest, len(tokens) - i), 0, -1):
        cls = table.get(tuple(tokens[i : i + n]))
        if cls is not None:
            return cls, n
    return None, 1


def mentioned_objects(text: str, vocabulary: str | None = None) -> list[str]:
    """Classes mentioned in ``text``, in order, one entry per mention (longest match first; with COCO's
    table a qualifier such as "baby" before another object is not a person)."""
    table, longest = phrase_table(vocabulary)
    tokens, found, i = words(text), [], 0
    while i < len(tokens):
        if vocabulary is None and tuple(tokens[i : i + 2]) in NON_OBJECTS:
            i += 2
            continue
        cls, n = _match(table, longest, tokens, i)
        if vocabulary is None and tokens[i] in QUALIFIERS and i + 1 < len(tokens):
            following, _ = _match(table, longest, tokens, i + 1)
            if following is not None:
                cls = None
        if cls is not None:
            found.append(cls)
        i += n
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


def _official_available(scoring: str) -> bool:
    """Whether the official reader can run; under ``--scoring official`` its absence is an error."""
    try:
        tokenizer_name()
    except PrefoptError:
        if scoring == "official":
            raise
        return False
    return True


def chair_metrics(rows: list[dict[str, Any]], all_captions: bool = False) -> dict[str, float]:
    """CHAIRs, CHAIRi and recall of rows holding ``mentions`` (list) and ``gt`` (list of classes).

    CHAIRs divides by all captions when ``all_captions`` (the script), else by captions with a mention.
    """
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
        "chair_s": safe_div(hallu_caps, len(rows) if all_captions else with_obj),
        "chair_i": safe_div(hallu, mentions),
        "recall": safe_div(covered, gt_total),
    }


def official_chair_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """:func:`chair_metrics` with the script's CHAIRs denominator (all captions)."""
    return chair_metrics(rows, all_captions=True)


def chair_scores(rows: list[dict[str, Any]], scoring: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-caption rows under ``scoring`` (``mentions``/``gt`` set from that reading) and their metrics."""
    check_scoring(scoring)
    scored = [{**r, "mentions": r[f"mentions_{scoring}"], "gt": r[f"gt_{scoring}"]} for r in rows]
    return scored, (official_chair_metrics if scoring == "official" else chair_metrics)(scored)


class Chair(Benchmark):
    """CHAIR on COCO-style captions."""

    name = "chair"
    max_new_tokens = 512

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """Captioning questions from a COCO instances json or a JSONL with ground-truth objects."""
        if Path(path).suffix.lower() == ".json" and _is_coco(path):
            objects, files = coco_objects(path)
            return [
                EvalItem(i, DEFAULT_PROMPT, [files[i]], {"image_id": i, "image": files[i], "objects": sorted(objects[i])})
                for i in files
            ]
        known = CocoTruth(opts.annotations, coco_objects).instances if opts.annotations else None
        items = []
        for line, row in read_records(path):
            gt = self._ground_truth(row, path, line, known, opts.vocabulary)
            if "image" not in row:
                raise DataError("missing key 'image'", path=str(path), row=line)
            meta = {"image_id": row.get("image_id"), "image": row["image"], "objects": gt}
            items.append(EvalItem(item_id(row, line, ("image_id", "id")), row.get("prompt", DEFAULT_PROMPT), [row["image"]], meta))
        return items

    def _ground_truth(self, row: dict, path: str | Path, line: int, known: dict[str, set[str]] | None,
                      vocabulary: str | None = None) -> list:
        if isinstance(row.get("objects"), list):
            return sorted({to_class(str(o), path, line, vocabulary) for o in row["objects"]})
        if known is not None and str(row.get("image_id")) in known:
            return sorted(known[str(row["image_id"])])
        if known is not None and row.get("image_id") is not None:
            raise DataError(f"image_id {row['image_id']} is not in the annotations", path=str(path), row=line)
        raise DataError("no ground truth: give 'objects' or an 'image_id' found in --annotations", path=str(path), row=line)

    def read_predictions(self, path: str | Path, opts: EvalOptions) -> list[dict[str, Any]]:
        """Caption rows with both readings; ground truth from ``objects`` or ``--annotations``."""
        return self._parse(read_records(path), path, opts)

    def _parse(self, records: list[tuple[int, dict]], path: str | Path, opts: EvalOptions) -> list[dict[str, Any]]:
        truth = CocoTruth(opts.annotations, coco_objects) if opts.annotations else None
        official = opts.vocabulary is None and _official_available(opts.scoring)
        self.notes: dict[str, Any] = {"ground_truth": truth.describe() if truth else "objects given in the rows"}
        if official:
            self.notes["tokenizer"] = tokenizer_name()
        if truth is not None and not truth.caption_files and opts.scoring == "official" and opts.vocabulary is None:
            self.notes["warnings"] = ["CHAIR ground truth from instances only: the standard script also adds the "
                                      "objects of the COCO reference captions (give the annotation folder)"]
        out = []
        for line, row in records:
            caption = row["caption"] if isinstance(row.get("caption"), str) else answer_text(row, path, line)
            gt = self._ground_truth(row, path, line, truth.instances if truth else None, opts.vocabulary)
            parsed = {"id": item_id(row, line, ("id", "image_id")), "image_id": row.get("image_id"), "caption": caption}
            refs = truth.references(row.get("image_id")) if truth else []  # also for generated rows
            robust = mentioned_objects(caption, opts.vocabulary)
            parsed["mentions_robust"] = robust
            parsed["gt_robust"] = sorted(set(gt).union(*(mentioned_objects(c) for c in refs)))
            if opts.vocabulary is not None:
                parsed["mentions_official"], parsed["gt_official"] = robust, parsed["gt_robust"]
            elif official:
                parsed["mentions_official"] = caption_objects(caption)
                parsed["gt_official"] = sorted(set(gt).union(*(caption_objects(c) for c in refs)))
            out.append(parsed)
        return out

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """One caption row (ground truth from ``objects`` or ``--annotations``)."""
        return self._parse([(line, row)], path, opts)[0]

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """CHAIR metrics with intervals under ``opts.scoring``; per-caption mentions go to ``chair_details.jsonl``."""
        scored, _ = chair_scores(rows, opts.scoring)
        both = all("mentions_official" in r for r in rows)
        if out_dir is not None:
            with (out_dir / "chair_details.jsonl").open("w", encoding="utf-8") as fh:
                for r in scored:
                    bad = sorted({m for m in r["mentions"] if m not in set(r["gt"])})
                    keep = {k: v for k, v in r.items() if k not in ("mentions", "gt")}
                    fh.write(json.dumps({**keep, "mentions": r["mentions"], "gt": r["gt"], "hallucinated": bad}, ensure_ascii=False) + "\n")
        fn = official_chair_metrics if opts.scoring == "official" else chair_metrics
        summary = {"scoring": opts.scoring, "parse_disagreements": None, "n_unparsed": 0}
        if both:
            readings = [(sorted(set(r["mentions_official"])), sorted(set(r["mentions_robust"]))) for r in rows]
            summary = scoring_summary([a for a, _ in readings], [b for _, b in readings], opts.scoring)
        return {
            "benchmark": self.name,
            "n": len(rows),
            **summary,
            "n_mentions": sum(len(r["mentions"]) for r in scored),
            **getattr(self, "notes", {}),
            "metrics": bootstrap(scored, fn, rounds=opts.rounds, seed=opts.seed),
        }
