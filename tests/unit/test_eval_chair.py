"""CHAIR: synonym mapping, lemmatisation and the three metrics on hand-made captions."""

from __future__ import annotations

import json

import pytest

from prefopt.errors import DataError
from prefopt.eval.chair import lemmatize, mentioned_objects
from prefopt.eval.coco_synonyms import COCO_SYNONYMS
from prefopt.eval.common import EvalOptions
from prefopt.eval.runner import get_benchmark
from tests.benchdata.chair import CAPTIONS, _expected


def test_synonym_table_covers_coco():
    assert len(COCO_SYNONYMS) == 80


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two hot dogs and a dog", ["hot dog", "dog"]),
        ("a teddy bear, not a bear", ["teddy bear", "bear"]),
        ("people at the dining tables with wine glasses", ["person", "dining table", "wine glass"]),
        ("buses, knives and skis near the benches", ["bus", "knife", "skis", "bench"]),
        ("horses and sheep on the grass", ["horse", "sheep"]),
        ("a cell phone beside a computer mouse", ["cell phone", "mouse"]),
    ],
)
def test_mentions(text, expected):
    assert mentioned_objects(text) == expected


def test_lemmatize():
    assert [lemmatize(w) for w in ["dogs", "glasses", "ponies", "sandwiches", "bus", "people", "horses"]] == [
        "dog",
        "glass",
        "pony",
        "sandwich",
        "bus",
        "person",
        "horse",
    ]




def test_chair_metrics_with_objects(tmp_path):
    """Mentions: (1) person, horse, dog -> dog hallucinated; (2) hot dog, dining table -> none;
    (3) teddy bear, couch -> couch hallucinated; (4) none.

    robust CHAIRs = captions with a hallucination (1, 3) / captions with a mention (1, 2, 3) = 2/3 = .6667;
    official CHAIRs divides by all 4 captions: .5 (the script's reading finds the same mentions here);
    CHAIRi = 2 hallucinated mentions / 7 mentions = .2857;
    recall = covered gt (2 + 2 + 1 + 0) / gt objects (2 + 2 + 1 + 1) = 5/6 = .8333.
    """
    path = tmp_path / "caps.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "text": c, "objects": o}) + "\n" for i, (c, o) in enumerate(CAPTIONS))
    )
    bench = get_benchmark("chair")
    opts = EvalOptions(rounds=30, scoring="robust")
    m = bench.score(bench.read_predictions(path, opts), opts, tmp_path)
    _expected(m)
    assert (m["scoring"], m["parse_disagreements"]) == ("robust", 0)
    official = EvalOptions(rounds=30)
    _expected(bench.score(bench.read_predictions(path, official), official), chair_s=0.5)
    details = [json.loads(x) for x in (tmp_path / "chair_details.jsonl").read_text().splitlines()]
    assert details[0]["hallucinated"] == ["dog"] and details[2]["hallucinated"] == ["couch"]




def test_chair_errors_name_line(tmp_path):
    path = tmp_path / "caps.jsonl"
    path.write_text(
        json.dumps({"text": "a dog", "objects": ["dog"]})
        + "\n"
        + json.dumps({"text": "a cat", "objects": ["unicorn"]})
        + "\n"
    )
    bench = get_benchmark("chair")
    with pytest.raises(DataError, match=r"caps.jsonl, row 2: ground-truth object 'unicorn'"):
        bench.read_predictions(path, EvalOptions())
    path.write_text(json.dumps({"text": "a dog"}) + "\n")
    with pytest.raises(DataError, match=r"row 1: no ground truth"):
        bench.read_predictions(path, EvalOptions())


def test_repeated_mentions_count_for_chair_i():
    """ "A dog chases another dog near a cat", gt {cat}: mentions dog, dog, cat -> CHAIRi 2/3, CHAIRs 1/1,
    recall 1/1."""
    from prefopt.eval.chair import chair_metrics

    row = {"mentions": mentioned_objects("A dog chases another dog near a cat"), "gt": ["cat"]}
    assert row["mentions"] == ["dog", "dog", "cat"]
    assert chair_metrics([row]) == {"chair_s": 1.0, "chair_i": pytest.approx(2 / 3), "recall": 1.0}
