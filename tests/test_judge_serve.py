"""End to end over real HTTP: a `transformers serve` process on the tiny Qwen2.5-VL as the caption judge.

Needs the ``transformers[serving]`` extra (FastAPI + Uvicorn; in prefopt's ``dev``/``serve`` extras).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from prefopt.rewards.answers import score
from prefopt.rewards.caption import JUDGE_SYSTEM, CaptionReward, judge_prompt
from prefopt.rewards.judge import JudgeClient, JudgeConfig

READY_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"transformers serve not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def served_tiny_qwen(tiny_qwen_dir, tmp_path):
    pytest.importorskip("fastapi", reason="needs transformers[serving]")
    pytest.importorskip("uvicorn", reason="needs transformers[serving]")
    cli = Path(sys.executable).with_name("transformers")
    port = _free_port()
    log = tmp_path / "serve.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [
        str(cli),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        str(tiny_qwen_dir),
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}/health", log)
        yield f"http://127.0.0.1:{port}/v1", str(tiny_qwen_dir)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group we started, nothing else
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.mark.slow
def test_caption_reward_through_transformers_serve(served_tiny_qwen, monkeypatch):
    base_url, model = served_tiny_qwen
    monkeypatch.delenv("PREFOPT_SERVE_KEY", raising=False)  # loopback: a placeholder key is used
    config = JudgeConfig(
        base_url=base_url,
        model=model,
        api_key_env="PREFOPT_SERVE_KEY",
        max_tokens=12,
        temperature=0.0,
        timeout=60.0,
        max_retries=1,
        backoff=0.5,
    )
    caption, problem = "a red apple on a white plate", "What is on the plate?"
    # Greedy decoding (temperature 0) is deterministic, so the first answer is the expected one.
    first = JudgeClient(config).ask(judge_prompt(caption, problem, "free-form"), system=JUDGE_SYSTEM)
    assert isinstance(first, str) and first.strip()

    reward = CaptionReward(JudgeClient(config))
    completions = [
        f"<prethink>look</prethink><caption>{caption}</caption><think>t</think><answer>x</answer>",
        "<think>no caption</think><answer>x</answer>",
    ]
    got = reward(
        ["p", "p"], completions, solution=[first, first], problem_type="free-form", problem=[problem, problem]
    )
    assert got == [pytest.approx(score(first, first, "free-form")), 0.0]
    s = reward.stats()
    assert s["judge/calls"] == 1 and s["judge/failures"] == 0 and s["caption/empty"] == 1
