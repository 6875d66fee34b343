"""The CPU thread policy: free cores, overrides, and the spin setting for OpenMP workers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from prefopt import threads


@pytest.mark.parametrize(
    "cores,busy,expected",
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1), (16, 3.2, 13), (1, 0.0, 1)],
)
def test_choose_threads_uses_the_free_cores(cores, busy, expected):
    assert threads.choose_threads(cores, busy) == expected


def test_flag_beats_environment(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("PREFOPT_THREADS", "2")
    try:
        assert threads.configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert threads.configure_threads(None) == 2  # PREFOPT_THREADS
        monkeypatch.delenv("PREFOPT_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert threads.configure_threads(None) == 1
    finally:
        torch.set_num_threads(before)


def test_auto_measures_once_per_process(monkeypatch):
    monkeypatch.delenv("PREFOPT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    calls = []
    monkeypatch.setattr(threads, "_AUTO", None)
    monkeypatch.setattr(threads, "allowed_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: calls.append(1) or 1.0)
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads() == 1
        assert threads.configure_threads() == 1
        assert calls == [1]
    finally:
        torch.set_num_threads(before)


def test_busy_cores_is_a_fraction_of_the_machine():
    busy = threads.busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-9


def test_cli_sets_short_spin_for_children_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = (
        "import os, sys; from prefopt.threads import prepare_environment; prepare_environment();"
        "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [threads.SPIN_COUNT, "False"]


def test_cli_threads_flag_sets_torch_threads_before_the_command_runs(tmp_path):
    from prefopt.cli import main

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["--threads", "1", "sft", "--config", str(tmp_path / "missing.yaml")]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_command_default_sits_between_environment_and_auto(monkeypatch):
    monkeypatch.delenv("PREFOPT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_AUTO", None)
    monkeypatch.setattr(threads, "allowed_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)  # auto would pick 2
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(None, default=1) == 1
        monkeypatch.setenv("PREFOPT_THREADS", "2")
        assert threads.configure_threads(None, default=1) == 2  # the environment beats the command's default
        assert threads.configure_threads(1, default=2) == 1  # and the flag beats both
    finally:
        torch.set_num_threads(before)


def test_demo_runs_on_one_thread_by_default_and_passes_it_to_every_stage(monkeypatch, tmp_path):
    """The thread count moves the demo's numbers, a busy machine must not: one thread unless asked."""
    import prefopt.demo.pipeline as pipeline
    from prefopt.cli import main

    monkeypatch.delenv("PREFOPT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_AUTO", 2)  # what the free-core rule would give on an idle 2-core machine
    seen = []

    def fake_run_demo(out, **kw):
        seen.append(torch.get_num_threads())
        return None

    stage_argv = []
    monkeypatch.setattr(pipeline, "main", lambda argv: stage_argv.append(argv) or 0)
    monkeypatch.setattr("prefopt.demo.run_demo", fake_run_demo)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["demo", "--out", str(tmp_path / "d")]) == 0
        assert seen == [1]
        pipeline.cli(["make-data", "--out", tmp_path], "make-data")
        assert stage_argv[-1][:3] == ["--threads", "1", "make-data"]
        assert main(["--threads", "2", "demo", "--out", str(tmp_path / "d")]) == 0
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)
