"""`prefopt demo --quick`: every stage runs through the real subcommands and the report holds every metric."""

from __future__ import annotations

import json

import pytest
import yaml

from prefopt.cli import main
from prefopt.demo.pipeline import METHODS
from prefopt.demo.summary import HEADLINE

POPE = {"accuracy", "precision", "recall", "f1", "yes_ratio"}
CHAIR = {"chair_s", "chair_i", "recall"}


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_report_holds_every_metric_for_every_method(demo_out):
    table = json.loads((demo_out / "report" / "comparison.json").read_text())
    assert table["baseline"] == "cold_start" and table["runs"] == list(METHODS)
    found = {(r["benchmark"], r["metric"]) for r in table["rows"]}
    assert {("pope", m) for m in POPE} | {("chair", m) for m in CHAIR} <= found
    for row in table["rows"]:
        for method in METHODS:
            iv = row["runs"][method]
            assert iv is not None and iv["ci_low"] <= iv["value"] <= iv["ci_high"], (row["metric"], method)
    assert (demo_out / "report" / "comparison.png").stat().st_size > 1000
    markdown = (demo_out / "report" / "comparison.md").read_text()
    assert "cold_start (baseline)" in markdown and "Δ grpo − cold_start" in markdown


def test_summary_and_recipes(demo_out, capsys):
    summary = (demo_out / "summary.md").read_text()
    for bench, metric, _ in HEADLINE:
        assert f"{bench} {metric}" in summary
    assert "What it does not show" in summary
    assert "Scoring: official (--scoring) for every run." in summary
    for stage in ("sft", "select", "grpo", "symmpo"):
        text = (demo_out / "recipes" / f"{stage}.yaml").read_text()
        assert text.startswith(f"# prefopt {stage} --config {demo_out / 'recipes' / stage}.yaml")
        yaml.safe_load(text)


def test_grpo_stage_used_the_served_judge_and_ntk(demo_out):
    state = json.loads((demo_out / "runs" / "grpo" / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    assert logs, "GRPO logged no training step"
    assert sum(h["judge/calls"] + h["judge/cache_hits"] for h in logs) > 0  # captions went over HTTP
    assert all(h["judge/failures"] == 0 for h in logs)
    assert all("ntk/loss" in h for h in logs)
    selected = json.loads((demo_out / "runs" / "select" / "selected.json").read_text())
    assert len(selected) == 8  # keep 0.5 of 16 prompts


def test_rerun_keeps_finished_stages(demo_out, capsys):
    before = (demo_out / "runs" / "grpo" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(demo_out)]) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier, kept") == 9
    assert (demo_out / "runs" / "grpo" / "model.safetensors").stat().st_mtime_ns == before


def test_quick_demo_matches_the_snapshot(demo_out):
    """Same seed, same metrics: counts exactly, floats to 1e-9 (regenerate: python scripts/update_demo_snapshot.py)."""
    from prefopt.demo.snapshot import SNAPSHOT, differences, snapshot

    expected = json.loads(SNAPSHOT.read_text())
    diffs = differences(expected, snapshot(demo_out))
    assert not diffs, "quick demo moved from tests/data/demo_quick_snapshot.json:\n" + "\n".join(diffs[:20])


def test_every_stage_recorded_its_cost(demo_out):
    for stage in ("sft", "select", "grpo", "symmpo"):
        data = json.loads((demo_out / "runs" / stage / "cost.json").read_text())
        assert data["stage"]["wall_s"] > 0 and data["stage"]["forward_tokens"] > 0, stage
    assert "train" in json.loads((demo_out / "runs" / "grpo" / "cost.json").read_text())
    assert json.loads((demo_out / "runs" / "symmpo" / "cost.json").read_text())["reference_cache"]["examples"] == 16
    grpo = json.loads((demo_out / "eval" / "grpo" / "cost.json").read_text())["method"]
    assert grpo["stages"] == ["select", "grpo"] and grpo["training"]["judge_calls"] > 0
    assert grpo["training"]["generated_tokens"] > 0 and grpo["eval"]["forward_tokens"] > 0
    info = json.loads((demo_out / "eval" / "grpo" / "pope" / "run_info.json").read_text())
    assert info["cost"]["forward_tokens"] > 0
