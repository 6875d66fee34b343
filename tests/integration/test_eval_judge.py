"""Judge-based benchmarks (MMHal, HallusionBench) against the loopback fake judge."""

from __future__ import annotations

import json

import pytest

from prefopt.eval.mmhal import parse_rating
from prefopt.testing.judge_server import JudgeServer
from tests.helpers import mmhal_answer


@pytest.mark.parametrize(
    ("reply", "rating"),
    [("Rating: 6", 6), ("rating=0.", 0), ("3", 3), ("Rating: 9", None), (None, None), ("good", None)],
)
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


def test_mmhal_with_judge(tmp_path, monkeypatch):
    """Robust scoring (a 4-question file; official scoring needs the 96 in order).  Ratings 6 (alpha), 2 (beta: the last 'Rating:' wins), 4 (gamma), unreadable (delta).

    score = (6 + 2 + 4) / 3 = 4.0; hallucination_rate = ratings < 3 -> 1/3 = .3333; n_unrated 1.
    attribute (alpha, beta): score 4.0, rate .5; counting (gamma, delta): score 4.0, rate 0.
    """
    from prefopt.cli import main

    monkeypatch.delenv("FAKE_JUDGE_KEY", raising=False)
    rows = [
        {
            "question_type": t,
            "question": "What is shown?",
            "gt_answer": "A cat.",
            "image_content": ["cat"],
            "image_src": f"http://x/{i}.jpg",
            "text": a,
        }
        for i, (t, a) in enumerate(
            [("attribute", "alpha"), ("attribute", "beta"), ("counting", "gamma"), ("counting", "delta")]
        )
    ]
    preds = tmp_path / "mmhal.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with JudgeServer(answer=mmhal_answer) as server:
        code = main(
            [
                "eval",
                "mmhal",
                "--predictions",
                str(preds),
                "--out",
                str(out),
                "--judge-url",
                server.base_url,
                "--judge-model",
                "fake",
                "--judge-api-key-env",
                "FAKE_JUDGE_KEY",
                "--scoring",
                "robust",
            ]
        )
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {k: round(v["value"], 4) for k, v in m["metrics"].items()} == {
        "score": 4.0,
        "hallucination_rate": 0.3333,
    }
    assert m["n_unrated"] == 1
    assert m["categories"]["attribute"]["score"]["value"] == 4.0
    assert m["categories"]["attribute"]["hallucination_rate"]["value"] == 0.5
    assert m["categories"]["counting"]["hallucination_rate"]["value"] == 0.0
    assert len((out / "judgements.jsonl").read_text().splitlines()) == 4
    info = json.loads((out / "run_info.json").read_text())
    assert info["options"]["judge"]["api_key_env"] == "FAKE_JUDGE_KEY"
    # scoring again reuses the verdicts cached under OUT/judge_cache: no new judge calls
    with JudgeServer(answer=mmhal_answer) as server:
        args = ["eval", "mmhal", "--predictions", str(preds), "--out", str(out)]
        assert (
            main([*args, "--judge-url", server.base_url, "--judge-model", "fake", "--scoring", "robust"]) == 0
        )
        assert server.requests == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["metrics"] == m["metrics"] and again["judge"]["judge/cache_hits"] == 4.0


def test_mmhal_without_judge_is_a_clear_error(tmp_path, capsys):
    from prefopt.cli import main

    preds = tmp_path / "m.jsonl"
    preds.write_text(json.dumps({"question": "q", "gt_answer": "g", "text": "a"}) + "\n")
    assert main(["eval", "mmhal", "--predictions", str(preds), "--out", str(tmp_path / "o")]) == 2
    assert "needs an LLM judge" in capsys.readouterr().err
