"""AMBER scoring against the numbers AMBER's own ``inference.py`` prints on the same answers (the CLI end; the pure tests are in tests/unit/test_eval_amber.py)."""

from __future__ import annotations

import json

import pytest

from tests.benchdata.amber import ANNOTATIONS, ANSWERS, QUERIES


def test_cli_score_only(tmp_path, capsys):
    from prefopt.cli import main

    out = tmp_path / "out"
    args = ["eval", "amber", "--predictions", str(ANSWERS), "--data", str(QUERIES)]
    assert main([*args, "--annotations", str(ANNOTATIONS), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["scoring"] == "official" and m["data"] == str(QUERIES)
    assert m["dimensions"]["attribute"]["f1"] == pytest.approx(0.438, abs=1e-4)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["accuracy"] == pytest.approx(0.248, abs=1e-4)
    assert main([*args, "--annotations", str(ANNOTATIONS), "--out", str(out), "--scoring", "robust"]) == 0
    assert json.loads((out / "metrics.json").read_text())["scoring"] == "robust"
