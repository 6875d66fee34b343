"""Score-only POPE: official answer files joined with official question files.

``prefopt eval pope --predictions ANSWERS.jsonl --data coco_pope_random.json --out DIR``

Answers come in LLaVA's layout (``{"question_id", "text", ...}``, joined by ``question_id``; a
``prompt`` field, when present, must contain the question) or POPE's (``{"question", "answer"}``, no id:
joined by position as POPE's ``evaluate.py`` does, each question text checked).  Several ``--data``
files take one ``--predictions`` each (paired in order), or one answers file whose rows name their split
in ``category``.  Every question must have exactly one answer.  The files scored are recorded (name,
rows, sha256, and the known POPE release they match: the random split exists with 2910 and with 3000
questions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.eval.common import EvalOptions, answer_text, normalize_yes_no, read_records, require

#: sha256 of the COCO question files published in the POPE repository (AoiDragon/POPE, output/coco/).
KNOWN_FILES = {
    "c16b65d2df6d70bb0814c8a4375833d39cdb09928fd936d3fc546491efa37f35": "POPE coco random, 2910 questions (2023-06/08 release)",
    "5b16653023bf4f64d57eb0d168259de6627f5cde7538b85ebed3cc33034aa6cc": "POPE coco popular, 3000 questions (2023-06/08 release)",
    "1d8f0906a9b50c05640f6f23abfac97523be2a1bed28f7eadc63b811699b2d26": "POPE coco adversarial, 3000 questions (2023-06/08 release)",
    "cb8dec967727fbee4b9cfadf9ba1ea9968515b12063efd313d0cf8b2b4230c86": "POPE coco random, 3000 questions (2023-08-04 interim, ids from 0)",
    "eafca6ceff32c7bbb5b2845a00c6828ec8cbaf5e04f890d6902dc46b92f96076": "POPE coco popular, 3000 questions (2023-08-04 interim, ids from 0)",
    "412efc6fe25eb2604f2386d536bcf713dc88327cb20c36489b1f689f89617d04": "POPE coco adversarial, 3000 questions (2023-08-04 interim, ids from 0)",
    "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994": "POPE coco random, 3000 questions (2023-10 release, current)",
    "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753": "POPE coco popular, 3000 questions (2023-10 release, current)",
    "207273ac3b7fdd04df206c6809b77a4e7f60360a730ade6b7e32804e8dd5602f": "POPE coco adversarial, 3000 questions (2023-10 release)",
    "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8": "POPE coco adversarial, 3000 questions (2023-11 spelling fix, current)",
}


def file_record(path: str | Path, rows: int) -> dict[str, Any]:
    """``{path, name, rows, sha256, release}`` of a scored file (release: the known POPE file it matches)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"path": str(path), "name": Path(path).name, "rows": rows, "sha256": digest,
            "release": KNOWN_FILES.get(digest)}


#: POPE's three splits, as their file names spell them.
SPLITS = ("adversarial", "popular", "random")


def split_from_name(path: str | Path) -> str | None:
    """The POPE split named in a file name, if any."""
    stem = Path(path).name.lower()
    return next((s for s in SPLITS if s in stem), None)


def _questions(path: str) -> tuple[str, list[dict[str, Any]]]:
    records = read_records(path)
    split = split_from_name(path) or Path(path).stem
    out = []
    for line, row in records:
        require(row, ("question_id", "text", "label"), path, line)
        out.append({"line": line, "question_id": str(row["question_id"]), "question": str(row["text"]),
                    "label": normalize_yes_no(row["label"], path, line),
                    "category": str(row.get("category") or split)})
    if not out:
        raise DataError("no questions", path=path)
    return split, out


def _same_question(asked: str, question: str) -> bool:
    return question.strip().lower() in asked.strip().lower()


def _join_by_id(answers, questions, ans_path, data_path) -> list[tuple[dict, str]]:
    by_id = {q["question_id"]: q for q in questions}
    seen: dict[str, int] = {}
    for line, row in answers:
        qid = str(row["question_id"])
        if qid not in by_id:
            raise DataError(f"question_id {qid} is not in {data_path}", path=ans_path, row=line)
        if qid in seen:
            raise DataError(f"question_id {qid} answered twice (also row {seen[qid]})", path=ans_path, row=line)
        seen[qid] = line
        asked = row.get("prompt")
        if isinstance(asked, str) and not _same_question(asked, by_id[qid]["question"]):
            raise DataError(f"question_id {qid} asks {asked.splitlines()[0]!r}, but {data_path} asks "
                            f"{by_id[qid]['question']!r}: these answers belong to another question file",
                            path=ans_path, row=line)
    missing = [q["question_id"] for q in questions if q["question_id"] not in seen]
    if missing:
        raise DataError(f"{len(missing)} of {len(questions)} questions of {data_path} have no answer "
                        f"(first: question_id {missing[0]})", path=ans_path)
    rows = {str(row["question_id"]): (line, row) for line, row in answers}
    return [(q, answer_text(rows[q["question_id"]][1], ans_path, rows[q["question_id"]][0])) for q in questions]


def _join_by_position(answers, questions, ans_path, data_path) -> list[tuple[dict, str]]:
    if len(answers) != len(questions):
        raise DataError(f"{len(answers)} answers for the {len(questions)} questions of {data_path} "
                        "(POPE's {question, answer} layout is joined by position)", path=ans_path)
    out = []
    for (line, row), q in zip(answers, questions):
        if "question" in row and not _same_question(str(row["question"]), q["question"]):
            raise DataError(f"answer asks {row['question']!r} but row {q['line']} of {data_path} asks "
                            f"{q['question']!r}: the files are not in the same order", path=ans_path, row=line)
        out.append((q, answer_text(row, ans_path, line)))
    return out


def _pair(pred_paths: list[str], data_paths: list[str]) -> list[tuple[str, str, str | None]]:
    """``(answers file, questions file, split the answer rows must name or None)`` triples."""
    if len(pred_paths) == len(data_paths):
        return [(p, d, None) for p, d in zip(pred_paths, data_paths)]
    if len(pred_paths) == 1:
        return [(pred_paths[0], d, "category") for d in data_paths]
    raise DataError(f"{len(pred_paths)} --predictions for {len(data_paths)} --data files: give one answers file "
                    "per question file (in the same order), or one answers file whose rows carry 'category'")


def read_joined(
    pred_paths: list[str],
    data_paths: list[str],
    opts: EvalOptions,
    both_readings: Callable[[str, str], dict[str, Any]],
) -> tuple[list[dict], dict]:
    """Joined, parsed rows (``both_readings(answer, template)`` of each) and the ``files`` record of metrics.json.

    The readings come from the caller (``prefopt.eval.pope``), which builds on this module, not the reverse.
    """
    rows, files = [], {"questions": [], "answers": []}
    cache: dict[str, list] = {}
    for ans_path, data_path, by_category in _pair(pred_paths, data_paths):
        split, questions = _questions(data_path)
        answers = cache.setdefault(ans_path, read_records(ans_path))
        if by_category:
            answers = [(ln, r) for ln, r in answers if str(r.get("category", "")) == split]
            if not answers:
                raise DataError(f"no answer row has category '{split}' (needed to score {data_path} "
                                "from a single answers file)", path=ans_path)
        if not answers:
            raise DataError("no answers", path=ans_path)
        by_id = "question_id" in answers[0][1]
        joined = (_join_by_id if by_id else _join_by_position)(answers, questions, ans_path, data_path)
        for q, text in joined:
            rows.append({"id": f"{split}:{q['question_id']}", "question_id": q["question_id"],
                         "category": q["category"], "label": q["label"], "text": text,
                         **both_readings(text, opts.template)})
        files["questions"].append({**file_record(data_path, len(questions)), "split": split})
        if ans_path not in [f["path"] for f in files["answers"]]:
            files["answers"].append(file_record(ans_path, len(cache[ans_path])))
    return rows, files
