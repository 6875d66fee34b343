"""AMBER scoring against the numbers AMBER's own ``inference.py`` prints on the same answers.

tests/data/amber/ holds a sample of the official files (images AMBER_1..AMBER_16: 278 queries, 16
generative) and messy answers (see its README).  The expected figures were obtained once by
running junyangwang0410/AMBER ``inference.py`` (commit 534babf) in /tmp, with the full official
``data/annotations.json``, ``relation.json``, ``safe_words.txt`` and ``metrics.txt``:

    python inference.py --inference_data DISC.json --evaluation_type d    # and da, dr
    python inference.py --inference_data EXIST.json --evaluation_type de

where DISC.json is answers_sample.json without its 16 generative answers (the script's generative
path needs spaCy's en_core_web_lg, which was stubbed out: the discriminative path never calls it)
and EXIST.json its 79 existence answers.  The printed percentages are stored below / 100.
"""

from __future__ import annotations

import json

import pytest

from prefopt.errors import DataError
from prefopt.eval.amber_scoring import read_official, read_robust, score_amber
from prefopt.eval.common import EvalOptions
from prefopt.eval.runner import get_benchmark
from tests.benchdata.amber import ANNOTATIONS, ANSWERS, QUERIES

# inference.py --evaluation_type d on the 262 discriminative answers (printed percent / 100)
OFFICIAL_D = {
    "discriminative": {"accuracy": 0.248, "precision": 0.900, "recall": 0.266, "f1": 0.411},
    "existence": {"accuracy": 0.278, "precision": 1.000, "recall": 0.278, "f1": 0.435},
    "attribute": {"accuracy": 0.250, "precision": 0.852, "recall": 0.295, "f1": 0.438},
    "state": {"accuracy": 0.250, "precision": 0.842, "recall": 0.320, "f1": 0.464},
    "number": {"accuracy": 0.194, "precision": 0.800, "recall": 0.222, "f1": 0.348},
    "action": {"accuracy": 0.350, "precision": 1.000, "recall": 0.300, "f1": 0.462},
    "relation": {"accuracy": 0.148, "precision": 0.0, "recall": 0.0, "f1": 0.0},
}


def _score(predictions, scoring="official", data=None, annotations=ANNOTATIONS):
    bench = get_benchmark("amber")
    opts = EvalOptions(rounds=20, annotations=str(annotations), scoring=scoring, data=(data,) if data else ())
    return bench.score(bench.read_predictions(predictions, opts), opts)


def _close(got, want):
    for dim, figures in want.items():
        for name, value in figures.items():
            assert got[dim][name] == pytest.approx(value, abs=1e-4), (dim, name)


def test_official_query_all_matches_inference_py():
    """The query_all answers (generative ids 1..1004 included) score; every dimension matches."""
    m = _score(ANSWERS, data=str(QUERIES))
    assert m["scoring"] == "official" and m["n"] == 262 and m["n_generative"] == 16
    _close(m["dimensions"], OFFICIAL_D)
    assert {k: v["value"] for k, v in m["metrics"].items()} == pytest.approx(
        OFFICIAL_D["discriminative"], abs=1e-4
    )
    assert m["categories"]["relation"]["accuracy"]["value"] == pytest.approx(0.148, abs=1e-4)
    # every answer that is not exactly "Yes"/"No" is unparsed officially and read by the robust rule
    assert m["n_unparsed"] == 182 and m["parse_disagreements"] == 182
    assert m["generative"]["scored"] is False and "en_core_web_lg" in m["generative"]["reason"]


def test_official_existence_only_uses_its_own_epsilon(tmp_path):
    """inference.py --evaluation_type de on the 79 existence answers: F1 with eps 1e-3 (43.5, not 43.6)."""
    rows = json.loads(ANSWERS.read_text())
    truth = {str(r["id"]): r for r in json.loads(ANNOTATIONS.read_text())}
    exist = [r for r in rows if truth[str(r["id"])]["type"] == "discriminative-hallucination"]
    path = tmp_path / "exist.json"
    path.write_text(json.dumps(exist))
    m = _score(path)
    assert list(m["dimensions"]) == ["discriminative", "existence"]
    _close(m["dimensions"], {"existence": OFFICIAL_D["existence"]})


def test_readings():
    assert [read_official(a) for a in ("Yes", "No", "yes", "No.", " Yes", "NO")] == [
        "yes",
        "no",
        None,
        None,
        None,
        None,
    ]
    assert [read_robust(a) for a in ("NO", "Not really.", "Yes, there is.", "There is no dog.")] == [
        "no",
        "no",
        "yes",
        "no",
    ]


def test_robust_hand_computed():
    """Robust reading; positive class "no".

    Answers (truth): "No, there is none." (no) TP; "Yes" (no) FN; "No" (yes) FP; "yes." (yes) TN;
    "There is not." (no) TP.  TP=2 FN=1 FP=1 TN=1: accuracy 3/5, precision 2/3, recall 2/3, F1 2/3.
    Officially only "Yes" (wrong, truth no) and "No" (wrong, truth yes) are answers: accuracy
    0/5.001 = 0; parse_disagreements 3 (rows 1, 4, 5).
    """
    answers = ["No, there is none.", "Yes", "No", "yes.", "There is not."]
    truths = ["no", "no", "yes", "yes", "no"]
    rows = [{"id": i, "response": a} for i, a in enumerate(answers)]
    truth = {str(i): {"type": "discriminative-relation", "truth": t} for i, t in enumerate(truths)}
    items, m = score_amber(rows, truth, "robust")
    assert m["dimensions"]["relation"] == pytest.approx(
        {"accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    )
    assert m["parse_disagreements"] == 3 and m["n_unparsed"] == 0 and m["scoring"] == "robust"
    _, official = score_amber(rows, truth, "official")
    assert official["dimensions"]["relation"]["accuracy"] == 0.0 and official["n_unparsed"] == 3
    with pytest.raises(ValueError, match="scoring"):
        score_amber(rows, truth, "lenient")


def test_robust_reads_more_answers_than_official():
    m = _score(ANSWERS, scoring="robust")
    assert m["scoring"] == "robust" and m["n_unparsed"] == 0 and m["parse_disagreements"] == 182
    assert m["metrics"]["accuracy"]["value"] > OFFICIAL_D["discriminative"]["accuracy"]


def test_bad_inputs_are_one_line_errors(tmp_path):
    gen = tmp_path / "gen.json"
    gen.write_text(json.dumps([{"id": 1, "response": "A forest."}, {"id": 2, "response": "A road."}]))
    with pytest.raises(DataError, match="only generative answers.*en_core_web_lg"):
        _score(gen)
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps([{"id": 1005, "response": "Yes"}, {"id": 99999, "response": "No"}]))
    with pytest.raises(
        DataError, match="row 2: no ground truth for id 99999: the id is not in --annotations"
    ):
        _score(stray)
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps([{"id": 1006, "image": "AMBER_1.jpg", "query": "?"}]))
    with pytest.raises(DataError, match="row 1: answer id 1005 is not a question of"):
        _score(stray, data=str(queries))




def test_load_items_asks_discriminative_queries(tmp_path):
    """Generating answers asks only the discriminative queries (a generative entry's truth is a list)."""
    ann = tmp_path / "annotations.json"
    ann.write_text(
        json.dumps(
            [
                {"id": 1, "type": "generative", "truth": ["dog"], "hallu": ["cat"]},
                {"id": 2, "type": "discriminative-hallucination", "truth": "no"},
            ]
        )
    )
    queries = tmp_path / "query.json"
    queries.write_text(
        json.dumps([{"id": i, "image": f"AMBER_{i}.jpg", "query": "Is there a dog?"} for i in (1, 2, 9)])
    )
    items = get_benchmark("amber").load_items(queries, EvalOptions(annotations=str(ann)))
    assert [it.id for it in items] == ["2"] and items[0].meta["truth"] == "no"
