"""Scorers on small hand-made files; expected metrics worked out by hand in each docstring (the CLI end; the pure tests are in tests/unit/test_eval_scorers.py)."""

from __future__ import annotations

import json

import pytest

from prefopt.errors import DataError
from prefopt.eval.runner import get_benchmark
from tests.benchdata.scorers import OPTS, POPE_ROWS, score, write_jsonl


def test_pope_cli_is_deterministic(tmp_path):
    from prefopt.cli import main

    path = write_jsonl(tmp_path / "p.jsonl", POPE_ROWS)
    outs = []
    for name in ("a", "b"):
        assert main(["eval", "pope", "--predictions", str(path), "--out", str(tmp_path / name)]) == 0
        outs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
        assert (tmp_path / name / "predictions.jsonl").is_file() and (
            tmp_path / name / "run_info.json"
        ).is_file()
    assert outs[0]["metrics"] == outs[1]["metrics"] and outs[0]["bootstrap"]["rounds"] == 100


def test_malformed_lines_are_reported_by_line(tmp_path, capsys):
    from prefopt.cli import main

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "yes", "label": "yes"}\n{"text": "no", "label"\n')
    with pytest.raises(DataError, match=r"bad.jsonl, row 2: invalid JSON"):
        score("pope", bad_json)
    missing = write_jsonl(
        tmp_path / "missing.jsonl", [{"text": "yes", "label": "yes"}] * 2 + [{"text": "no"}]
    )
    with pytest.raises(DataError, match=r"missing.jsonl, row 3: missing key 'label'"):
        score("pope", missing)
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "yes", "label": "maybe"}])
    with pytest.raises(DataError, match=r"row 1: label 'maybe' is not yes/no"):
        score("pope", odd)
    assert main(["eval", "pope", "--predictions", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "row 3" in capsys.readouterr().err


def test_record_layouts_are_read_from_content(tmp_path):
    """POPE ships JSONL named *.json; MMHal ships a JSON list; both score, and the copy kept is JSONL."""
    from prefopt.cli import main

    jsonl_named_json = tmp_path / "coco_pope_adversarial.json"
    jsonl_named_json.write_text("".join(json.dumps(r) + "\n" for r in POPE_ROWS))
    m = score("pope", jsonl_named_json)
    assert m["n"] == 6
    questions = tmp_path / "coco_pope_adversarial_questions.json"
    questions.write_text(
        json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "no"})
    )
    items = get_benchmark("pope").load_items(questions, OPTS)
    assert {it.meta["category"] for it in items} == {"adversarial"}  # split taken from the file name
    as_list = tmp_path / "answers.json"
    as_list.write_text(json.dumps(POPE_ROWS))
    out = tmp_path / "out"
    assert main(["eval", "pope", "--predictions", str(as_list), "--out", str(out)]) == 0
    copied = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert copied == POPE_ROWS
    assert json.loads((out / "metrics.json").read_text())["metrics"]["f1"]["value"] == pytest.approx(2 / 3)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "yes", "label": "yes"},\n {"text": }]')
    with pytest.raises(DataError, match=r"broken.json, row 2: invalid JSON"):
        score("pope", broken)
