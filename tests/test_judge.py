"""JudgeClient against the fault-injecting loopback server: retries, Retry-After, timeouts, cache, key hygiene."""

from __future__ import annotations

import logging
import time

import pytest

from prefopt.rewards.caption import CaptionReward, judge_prompt
from prefopt.rewards.judge import JudgeClient, JudgeConfig, JudgeError
from prefopt.testing.judge_server import JudgeServer

SECRET = "sk-test-SECRET-do-not-leak-1234567890"


def _client(server, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("api_key_env", "PREFOPT_TEST_JUDGE_KEY")
    return JudgeClient(JudgeConfig(base_url=server.base_url, model="judge", **kw))


def test_answers_in_order_and_stats():
    with JudgeServer() as server:
        client = _client(server, max_concurrency=4)
        prompts = [f"q{i}" for i in range(10)]
        answers = client.ask_many(prompts)
    assert answers == [f"<think>echo</think><answer>q{i}</answer>" for i in range(10)]
    s = client.stats()
    assert s["judge/calls"] == 10 and s["judge/failures"] == 0 and s["judge/retries"] == 0
    assert s["judge/latency_mean_s"] > 0
    assert server.requests == 10


@pytest.mark.parametrize("faults", [["500"], ["malformed"], ["empty"], ["500", "malformed", "empty"]])
def test_retries_then_success(faults):
    with JudgeServer(schedule=faults) as server:
        client = _client(server)
        assert client.ask_many(["a", "b"]) == [
            "<think>echo</think><answer>a</answer>",
            "<think>echo</think><answer>b</answer>",
        ]
    assert client.stats()["judge/retries"] == 2 * len(faults)
    assert server.requests == 2 * (len(faults) + 1)


def test_429_honours_retry_after():
    # Backoff would wait 5 s; Retry-After says 0.3 s, and that is what the client waits.
    with JudgeServer(schedule=["429"], retry_after=0.3) as server:
        client = _client(server, backoff=5.0)
        start = time.monotonic()
        assert client.ask("x") is not None
        elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 3.0
    assert server.outcomes["429"] == 1


def test_timeout_is_retried():
    with JudgeServer(schedule=["timeout"], stall_s=3.0) as server:
        client = _client(server, timeout=0.3)
        start = time.monotonic()
        assert client.ask("slow") == "<think>echo</think><answer>slow</answer>"
        assert time.monotonic() - start < 2.5
    assert client.stats()["judge/retries"] == 1


def test_non_retryable_4xx_fails_at_once():
    with JudgeServer() as server:
        client = JudgeClient(JudgeConfig(base_url=server.base_url.replace("/v1", "/nope"), backoff=0.01))
        assert client.ask("x") is None
    assert client.stats()["judge/calls"] == 1 and client.stats()["judge/failures"] == 1


def test_cache_second_run_makes_no_http_calls(tmp_path):
    cache = tmp_path / "cache"
    with JudgeServer() as server:
        first = _client(server, cache_dir=str(cache)).ask_many(["p1", "p2", "p3"], system="sys")
        assert server.requests == 3
        resumed = _client(server, cache_dir=str(cache))
        assert resumed.ask_many(["p1", "p2", "p3"], system="sys") == first
        assert server.requests == 3  # zero new HTTP calls
        assert resumed.stats()["judge/cache_hits"] == 3 and resumed.stats()["judge/calls"] == 0
        # A different system prompt is a different key.
        resumed.ask_many(["p1"], system="other")
        assert server.requests == 4
    files = list(cache.rglob("*.json"))
    assert len(files) == 4 and not list(cache.rglob(".tmp-*"))


def test_fully_down_gives_none_and_one_warning(caplog):
    with JudgeServer(fail_rate=1.0, faults=["500"]) as server:
        client = _client(server, max_retries=1, down_after=2)
        with caplog.at_level(logging.WARNING, logger="prefopt.rewards.judge"):
            first = client.ask_many([f"q{i}" for i in range(6)])
            second = client.ask_many([f"r{i}" for i in range(3)])
    assert first == [None] * 6 and second == [None] * 3
    warnings = [r for r in caplog.records if "JUDGE DOWN" in r.getMessage()]
    assert len(warnings) == 1
    assert client.stats()["judge/failures"] == 9
    # Once down, prompts are probed once instead of paying every retry.
    assert server.requests < 9 * 2


def test_fail_fast_raises():
    with JudgeServer(fail_rate=1.0, faults=["500"]) as server:
        client = _client(server, max_retries=0, down_after=2, fail_fast=True, max_concurrency=1)
        with pytest.raises(JudgeError, match="fail_fast"):
            client.ask_many([f"q{i}" for i in range(5)])


def test_random_faults_are_deterministic_and_recoverable():
    outcomes = []
    for _ in range(2):
        with JudgeServer(fail_rate=0.5, seed=7, retry_after=0.01, stall_s=0.5) as server:
            client = _client(server, max_retries=8, timeout=0.2)
            assert None not in client.ask_many([f"q{i}" for i in range(8)])
            outcomes.append(dict(server.outcomes))
    assert outcomes[0] == outcomes[1]
    assert sum(v for k, v in outcomes[0].items() if k != "ok") > 0


def test_api_key_never_logged_cached_or_shown(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PREFOPT_TEST_JUDGE_KEY", SECRET)
    cache = tmp_path / "cache"
    with JudgeServer(schedule=["429", "malformed"], retry_after=0.01) as server:
        client = _client(server, cache_dir=str(cache))
        with caplog.at_level(logging.DEBUG):
            client.ask_many(["hello"])
    auth = [h.get("authorization") for h in server.seen_headers]
    assert auth and all(a == f"Bearer {SECRET}" for a in auth)  # the key is read from the environment
    assert SECRET not in caplog.text
    assert all(SECRET not in f.read_text() for f in cache.rglob("*") if f.is_file())
    assert SECRET not in repr(client) and SECRET not in repr(client.config)
    assert SECRET not in str(client.stats())


def test_remote_url_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("PREFOPT_NO_SUCH_KEY", raising=False)
    client = JudgeClient(
        JudgeConfig(base_url="https://api.example.com/v1", api_key_env="PREFOPT_NO_SUCH_KEY")
    )
    with pytest.raises(JudgeError, match="PREFOPT_NO_SUCH_KEY"):
        client.ask("x")


def _caption_judge(messages):
    """Answers A when the description mentions red, else B (a judge that can only read the caption)."""
    text = messages[-1]["content"]
    description = text.split("Question:")[0]
    return "<think>reading</think><answer>A</answer>" if "red" in description else "<answer>B</answer>"


def test_caption_reward():
    completions = [
        "<prethink>p</prethink><caption>a red apple</caption><think>t</think><answer>A</answer>",
        [
            {
                "role": "assistant",
                "content": "<prethink>p</prethink><caption>a green pear</caption><think>t</think><answer>A</answer>",
            }
        ],
        "<think>no caption at all</think><answer>A</answer>",
        "<prethink>p</prethink><caption> </caption><think>t</think><answer>A</answer>",
    ]
    metrics = {}
    with JudgeServer(answer=_caption_judge) as server:
        reward = CaptionReward(_client(server), weight=1.0)
        got = reward(
            prompts=["p"] * 4,
            completions=completions,
            solution=["<answer>A</answer>"] * 4,
            problem_type=["multiple choice"] * 4,
            problem=["What fruit is it?"] * 4,
            options=[["A. apple", "B. pear"]] * 4,
            log_metric=lambda k, v: metrics.__setitem__(k, v),
        )
    assert got == [1.0, 0.0, 0.0, 0.0]
    assert server.requests == 2  # no call for missing or empty captions
    s = reward.stats()
    assert s["caption/empty"] == 2 and s["caption/failed"] == 0 and s["caption/mean"] == 0.25
    assert s["judge/calls"] == 2
    assert metrics["caption/empty_frac"] == 0.5
    assert reward.__name__ == "caption"


def test_caption_reward_counts_failed_judgements():
    with JudgeServer(fail_rate=1.0, faults=["500"]) as server:
        reward = CaptionReward(_client(server, max_retries=0), weight=2.0)
        got = reward(["p"], ["<caption>red</caption><answer>A</answer>"], ["A"], "multiple choice", ["Q?"])
    assert got == [0.0]
    assert reward.stats()["caption/failed"] == 1


def test_caption_reward_reads_question_from_prompt_without_problem_column():
    seen = []

    def judge(messages):
        seen.append(messages[-1]["content"])
        return "<answer>B</answer>"

    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which fruit?"}]}]
    with JudgeServer(answer=judge) as server:
        reward = CaptionReward(_client(server))
        got = reward([prompt], ["<caption>a pear</caption><answer>B</answer>"], ["B"], ["multiple choice"])
    assert got == [1.0]
    assert "Question:\n Which fruit?" in seen[0] and "a pear" in seen[0]


def test_judge_prompt_layout():
    text = judge_prompt("a red apple", "What fruit?", "multiple choice", ["A. apple", "B. pear"], "prefopt")
    assert text.startswith(
        "Image description: a red apple\n\nQuestion: What fruit?\nOptions:\nA. apple\nB. pear\n"
    )
    assert "<think> </think>" in text and "<caption>" not in text
