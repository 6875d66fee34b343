"""Smoke test of the benchmark scripts: each quick path runs on the tiny Qwen model and prints its ratios.

No timing thresholds: the numbers live in docs/benchmarks.md. The scripts run in this process (their
``main(argv)``), so the session's tiny checkpoint is reused and no interpreter start is paid per script.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks/ package lives at the repo root
from benchmarks import run_all  # noqa: E402


@pytest.fixture
def keep_threads():
    """The scripts pin torch to one thread; give the rest of the session its setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


CASES = {
    "ntk_kernel": ["--case", "tiny"],
    "grpo_step": ["--batch", "2", "--group", "2", "--completion", "40", "--judge-latency", "0.1"],
    "symmpo_throughput": ["--loss", "dpo"],
    "vision_share": [],
    "resample_bench": [],
    "select_bench": ["--k", "8", "--tokens", "4"],
}


@pytest.mark.parametrize("module", sorted(CASES))
def test_quick_path_prints_its_ratios(module, tiny_qwen_dir, capsys, keep_threads):
    import importlib

    mod = importlib.import_module(f"benchmarks.{module}")
    argv = [
        "--quick",
        "--repeats",
        "1",
        "--family",
        "qwen2_5_vl",
        "--model-dir",
        f"qwen2_5_vl={tiny_qwen_dir}",
    ]
    mod.main(argv + CASES[module])
    out = capsys.readouterr().out.splitlines()
    result = json.loads(next(line for line in out if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["ratios"], "no ratio reported"
    assert all(math.isfinite(r["value"]) and r["value"] >= 0 for r in result["ratios"])
    ratio_lines = [line for line in out if line.startswith("ratio ")]
    # the ratios are the last lines printed
    assert out[-len(ratio_lines) :] == ratio_lines and len(ratio_lines) == len(result["ratios"])


def test_run_all_table_marks_goals():
    results = [
        {"target": "a", "ratios": [{"name": "x", "value": 1.2, "goal": "<= 1.15"}]},
        {
            "target": "b",
            "ratios": [
                {"name": "y", "value": 6.0, "goal": ">= 5"},
                {"name": "z", "value": 2, "goal": "report"},
            ],
        },
        {"target": "c", "error": "exit 1", "ratios": []},
    ]
    text = run_all.table(results)
    assert "MISSED" in text.splitlines()[1] and text.splitlines()[2].endswith("ok")
    assert text.splitlines()[3].rstrip().endswith("report") and "FAILED" in text
    quick = argparse.Namespace(
        device="cpu", dtype="float32", config="tiny", quick=True, repeats=None, family=None
    )
    assert run_all.script_args(quick, "ntk")[-4:] == ["--case", "tiny", "--case", "sweep"]
    assert "--quick" in run_all.script_args(quick, "grpo") and "--case" not in run_all.script_args(
        quick, "grpo"
    )


def test_ntk_training_path_rows_run_in_fresh_processes(capsys, keep_threads):
    """Every (tokens, side) row is its own process; the ratios are finite (their sign is timing noise here)."""
    from benchmarks import ntk_training_path

    ntk_training_path.main(["--repeats", "1", "--tokens", "32", "--d", "16", "--vocab", "200"])
    out = capsys.readouterr().out.splitlines()
    result = json.loads(next(line for line in out if line.startswith("RESULT "))[len("RESULT ") :])
    assert {(r["tokens"], r["side"]) for r in result["rows"]} == {(32, "head"), (32, "fused"), (32, "recompute")}
    assert all(r["maxrss_mib"] > 0 for r in result["rows"])
    assert all(math.isfinite(r["value"]) for r in result["ratios"])
