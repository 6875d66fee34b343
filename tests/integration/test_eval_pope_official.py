"""POPE official scoring against the numbers the official scripts print on the same files.

Inputs: tests/data/pope (80-row samples of the official question files, messy answers from
make_answers.py).  Expected numbers were obtained once by running, in a scratch folder outside the
project, (a) ``eval_pope(answers, "coco_pope_<split>.json")`` of haotian-liu/LLaVA
``llava/eval/eval_pope.py`` (commit 4241f08) on ``answers_<split>.jsonl`` for each split, and (b)
AoiDragon/POPE ``evaluate.py`` (commit 08d957b) with ``ans_file = answers_random_2910_pope_layout.jsonl``
and ``label_file = coco_pope_random_2910.json``; the values below are what they printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefopt.cli import main
from prefopt.eval.pope import official_reading, robust_reading
from tests.helpers import DATA as TEST_DATA

DATA = TEST_DATA / "pope"

# (accuracy, precision, recall, f1, yes_ratio) printed by LLaVA's eval_pope.py
LLAVA_PRINTED = {
    "random": (0.5625, 0.5409836065573771, 0.825, 0.6534653465346534, 0.7625),
    "popular": (0.5875, 0.559322033898305, 0.825, 0.6666666666666665, 0.7375),
    "adversarial": (0.5875, 0.559322033898305, 0.825, 0.6666666666666665, 0.7375),
}
# printed by POPE's evaluate.py on the 2910-question random file, answers in POPE's {question, answer} layout
POPE_PRINTED_2910 = (0.575, 0.576271186440678, 0.7906976744186046, 0.6666666666666667, 0.7375)
KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _close(values: dict, expected: tuple) -> None:
    assert [values[k]["value"] for k in KEYS] == pytest.approx(list(expected), abs=1e-4)


@pytest.mark.parametrize(
    ("text", "official", "robust"),
    [
        ("NO", "yes", "no"),
        ("Not really.", "yes", "no"),
        ("(No)", "yes", "no"),
        ("**No**", "yes", "no"),
        ("No;", "yes", "no"),
        ("No\nIt is absent.", "yes", "no"),
        ("No, there is no dog.", "no", "no"),
        ("no", "no", "no"),
        ("Yes. But not a cat", "yes", "yes"),
        ("There is not a dog.", "no", "no"),
        ("Nope.", "yes", "yes"),
    ],
)
def test_readings(text, official, robust):
    assert (official_reading(text), robust_reading(text)) == (official, robust)


def test_three_splits_match_llava_eval_pope(tmp_path):
    args = ["eval", "pope"]
    for split in ("random", "popular", "adversarial"):
        args += ["--predictions", str(DATA / f"answers_{split}.jsonl")]
    for split in ("random", "popular", "adversarial"):
        args += ["--data", str(DATA / f"coco_pope_{split}.json")]
    assert main([*args, "--out", str(tmp_path / "o"), "--bootstrap-rounds", "10"]) == 0
    m = _metrics(tmp_path / "o")
    assert (m["scoring"], m["n"], m["n_unparsed"]) == ("official", 240, 0)
    assert m["parse_disagreements"] == 51  # answers like "NO", "(No)", "No;" read differently
    for split, expected in LLAVA_PRINTED.items():
        _close(m["categories"][split], expected)
    means = [sum(v[i] for v in LLAVA_PRINTED.values()) / 3 for i in range(5)]
    _close(m["mean_of_splits"], tuple(means))
    names = [(f["name"], f["rows"], f["split"]) for f in m["files"]["questions"]]
    assert names == [(f"coco_pope_{s}.json", 80, s) for s in ("random", "popular", "adversarial")]
    assert all(len(f["sha256"]) == 64 for f in m["files"]["questions"] + m["files"]["answers"])


def test_pope_layout_2910_matches_pope_evaluate(tmp_path):
    args = ["eval", "pope", "--predictions", str(DATA / "answers_random_2910_pope_layout.jsonl"),
            "--data", str(DATA / "coco_pope_random_2910.json"), "--bootstrap-rounds", "10"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    m = _metrics(tmp_path / "o")
    _close(m["metrics"], POPE_PRINTED_2910)
    _close(m["categories"]["random"], POPE_PRINTED_2910)
    assert main([*args, "--out", str(tmp_path / "r"), "--scoring", "robust"]) == 0
    r = _metrics(tmp_path / "r")
    assert r["scoring"] == "robust" and r["parse_disagreements"] == m["parse_disagreements"] > 0
    assert r["metrics"]["accuracy"]["value"] == pytest.approx(0.6125)  # quoted in docs/evaluation.md


def test_known_release_is_named(tmp_path):
    """The sha256 of a question file identifies the POPE release (the 2910-question random split here)."""
    from prefopt.eval.pope_files import KNOWN_FILES, file_record

    assert sum("random, 2910" in v for v in KNOWN_FILES.values()) == 1
    assert file_record(DATA / "coco_pope_random.json", 80)["release"] is None  # a sample, not a release


def test_join_errors_name_the_file(tmp_path, capsys):
    answers = [json.loads(x) for x in (DATA / "answers_random.jsonl").read_text().splitlines()]
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps(a) + "\n" for a in answers[:-1]))
    base = ["eval", "pope", "--data", str(DATA / "coco_pope_random.json"), "--out", str(tmp_path / "o")]
    assert main([*base, "--predictions", str(short)]) == 2
    assert "1 of 80 questions" in capsys.readouterr().err
    wrong = tmp_path / "wrong.jsonl"  # the popular split's answers scored against the random questions
    wrong.write_text((DATA / "answers_popular.jsonl").read_text())
    assert main([*base, "--predictions", str(wrong)]) == 2
    assert "belong to another question file" in capsys.readouterr().err
    assert main([*base, "--predictions", str(short), "--predictions", str(short)]) == 2
    assert "one answers file per question file" in capsys.readouterr().err


def test_limit_must_be_positive(tmp_path, capsys):
    args = ["eval", "pope", "--model", "m", "--data", "d.json", "--out", str(tmp_path / "o")]
    assert main([*args, "--limit", "0"]) == 2
    err = capsys.readouterr().err
    assert "--limit must be at least 1" in err and "Traceback" not in err


def test_one_answers_file_with_categories(tmp_path):
    """One answers file for all splits, rows naming their split, gives the same per-split numbers."""
    combined = tmp_path / "all.jsonl"
    lines = []
    for split in ("random", "popular", "adversarial"):
        for x in (DATA / f"answers_{split}.jsonl").read_text().splitlines():
            lines.append(json.dumps({**json.loads(x), "category": split}))
    combined.write_text("\n".join(lines) + "\n")
    args = ["eval", "pope", "--predictions", str(combined), "--bootstrap-rounds", "5", "--out", str(tmp_path / "o")]
    for split in ("random", "popular", "adversarial"):
        args += ["--data", str(DATA / f"coco_pope_{split}.json")]
    assert main(args) == 0
    m = _metrics(tmp_path / "o")
    for split, expected in LLAVA_PRINTED.items():
        _close(m["categories"][split], expected)
