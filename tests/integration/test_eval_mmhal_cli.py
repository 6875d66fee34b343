"""MMHal-Bench scoring against llava-rlhf/LLaVA-RLHF ``Eval/summarize_gpt_mmhal.py`` on recorded judge replies (the CLI end; the pure tests are in tests/unit/test_eval_mmhal.py)."""

from __future__ import annotations

import json
import re

import pytest

from prefopt.testing.judge_server import JudgeServer
from tests.benchdata.mmhal import (
    OFFICIAL_HALLUCINATION,
    OFFICIAL_SCORE,
    RECORDS,
    TEMPLATE,
    _replay_judge,
)

OFFICIAL_PER_TYPE = [
    2.25,
    1.3333333333333333,
    2.25,
    1.9166666666666667,
    1.4166666666666667,
    0.5833333333333334,
]




def test_cli_score_only_through_judge_client(tmp_path, monkeypatch):
    """``prefopt eval mmhal --predictions TEMPLATE``: the official prompt goes to the judge, numbers match."""
    from prefopt.cli import main

    recorded = _replay_judge()

    def answer(messages):
        assert [m["role"] for m in messages] == ["user"]
        return recorded[messages[-1]["content"]]

    monkeypatch.delenv("FAKE_JUDGE_KEY", raising=False)
    out = tmp_path / "out"
    with JudgeServer(answer=answer) as server:
        args = [
            "eval",
            "mmhal",
            "--predictions",
            str(TEMPLATE),
            "--out",
            str(out),
            "--judge-url",
            server.base_url,
        ]
        assert main([*args, "--judge-model", "fake", "--judge-api-key-env", "FAKE_JUDGE_KEY"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["metrics"]["score"]["value"] == pytest.approx(OFFICIAL_SCORE, abs=1e-4)
    assert m["metrics"]["hallucination_rate"]["value"] == pytest.approx(OFFICIAL_HALLUCINATION, abs=1e-4)
    assert m["categories"]["environment"]["score"]["value"] == pytest.approx(OFFICIAL_PER_TYPE[5], abs=1e-4)
    assert m["scoring"] == "official" and m["n_unparsed"] == 42


def test_misordered_file_fails_before_any_judge_call(tmp_path, capsys):
    from prefopt.cli import main

    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps([RECORDS[1], RECORDS[0], *RECORDS[2:]]))
    with JudgeServer(answer=lambda messages: "Rating: 3") as server:
        args = ["eval", "mmhal", "--predictions", str(swapped), "--out", str(tmp_path / "o")]
        assert main([*args, "--judge-url", server.base_url, "--judge-model", "fake"]) == 2
        assert server.requests == 0
    err = capsys.readouterr().err
    assert re.search(r"record 1: question_type 'adversarial' where the official order has 'attribute'", err)
