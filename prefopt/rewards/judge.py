"""A robust client for an OpenAI-compatible text judge (used by the caption reward, SPEC 1.3).

``JudgeClient.ask_many`` sends many single-turn prompts in parallel (bounded by ``max_concurrency``) and
returns one answer per prompt, ``None`` for a prompt that still failed after ``max_retries`` retries.
Retried: HTTP 5xx, 408, 429 (waiting the server's ``Retry-After`` when given), timeouts, connection
errors, malformed JSON and empty answers; other 4xx fail at once. Backoff is ``backoff · 2^attempt``
seconds. Successful answers are cached on disk under ``cache_dir`` (one JSON file per
``sha256(model, system, prompt)``, written atomically), so a resumed run never pays twice; training puts the
cache under the run's output folder unless ``cache: false``. The counters (:meth:`JudgeClient.counters`) are
saved with every checkpoint, restored on resume and summed over ranks (:func:`summed_counters`).

The API key is read from the environment variable NAMED by ``api_key_env`` at call time; it is never
stored in the config, logged, cached or shown by ``repr``. A loopback ``base_url`` without a key gets a
placeholder. After ``down_after`` consecutive failed prompts one loud warning says the judge is down
(the caption reward is then 0); with ``fail_fast=True`` a :class:`JudgeError` is raised instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tqdm.auto import tqdm

from prefopt.errors import PrefoptError

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
PLACEHOLDER_KEY = "sk-local-placeholder"  # what loopback servers accept when no key is configured
MAX_RETRY_AFTER_S = 60.0


class JudgeError(PrefoptError):
    """The judge cannot be used (down with ``fail_fast``, or no API key for a remote URL)."""


@dataclass
class JudgeConfig:
    """Where and how to ask the judge; ``api_key_env`` is the NAME of the variable holding the key."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "deepseek-chat"
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 16
    timeout: float = 90.0
    max_retries: int = 3
    backoff: float = 1.0
    cache_dir: str | None = None  # None with cache on: the trainer puts it under the run's output folder
    cache: bool = True  # false: never read or write cached answers
    fail_fast: bool = False
    # None leaves the field out of the request, as the seed's call did: a cap (the old 256) cut reasoning
    # judges off before their </answer>, which then scores 0; None temperature is the provider's default.
    max_tokens: int | None = None
    temperature: float | None = None
    down_after: int = 8  # consecutive failed prompts before the "judge down" warning (or error)


class _Retryable(Exception):
    """A failed attempt worth retrying, with the wait the server asked for (if any)."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


def _is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in LOOPBACK_HOSTS


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to exponential backoff


class JudgeClient:
    """Parallel, retrying, caching chat-completions client for a text judge."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        self._lock = threading.Lock()
        self._client = None
        self._client_key_hash: str | None = None
        self._counts = {"calls": 0, "failures": 0, "retries": 0, "cache_hits": 0, "successes": 0}
        self._latency_total = 0.0
        self._consecutive_failures = 0
        self._warned_down = False
        self._down = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        c = self.config
        return f"JudgeClient(base_url={c.base_url!r}, model={c.model!r}, api_key_env={c.api_key_env!r})"

    # --- public API -------------------------------------------------------------------------------
    def ask(self, prompt: str, system: str | None = None) -> str | None:
        """One prompt: the judge's answer, or None after exhausting retries."""
        return self.ask_many([prompt], system=system)[0]

    def ask_many(self, prompts: list[str], system: str | None = None) -> list[str | None]:
        """Answers for ``prompts`` in order (None where the judge failed), asked in parallel."""
        if not prompts:
            return []
        client = self._openai_client()
        self._down.clear()
        pool = self._executor()
        futures = [pool.submit(self._ask_one, client, p, system) for p in prompts]
        try:
            results = [
                f.result() for f in tqdm(futures, desc="judge", disable=len(prompts) < 64, leave=False)
            ]
        except JudgeError:
            self._down.set()  # lets queued prompts return at once instead of calling a dead judge
            for f in futures:
                f.cancel()
            wait(futures)  # as with a per-call pool: nothing of this call still runs once it raises
            raise
        failed = sum(answer is None for answer in results)
        if failed and not self._warned_down:  # while down, the one loud warning already said it all
            log.warning(
                "judge: %d of %d prompts failed after %d retries (their rewards are 0); judge/failures counts them",
                failed,
                len(prompts),
                self.config.max_retries,
            )
        return results

    def _executor(self) -> ThreadPoolExecutor:
        """The worker pool, made on first use and kept: a GRPO step asks once, and starting fresh threads
        for every call cost ~3 ms each on a loaded CPU (profiled)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, self.config.max_concurrency), thread_name_prefix="judge"
                )
            return self._pool

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles get fresh locks, client and pool (none of those can be copied)."""
        state = dict(self.__dict__)
        for name in ("_lock", "_client", "_client_key_hash", "_pool", "_down"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a copy with fresh synchronisation objects."""
        self.__dict__.update(state)
        self._lock, self._client, self._client_key_hash, self._pool = threading.Lock(), None, None, None
        self._down = threading.Event()

    def stats(self) -> dict[str, float]:
        """Counters since creation: calls (HTTP requests), failures, retries, cache hits, mean latency."""
        return counter_stats(self.counters())

    def counters(self) -> dict[str, float]:
        """The raw counters (what :func:`counter_stats` turns into ``judge/*``), for checkpoints and summing."""
        with self._lock:
            return {**{k: float(v) for k, v in self._counts.items()}, "latency_total": self._latency_total}

    def load_counters(self, counters: dict[str, Any]) -> None:
        """Continue counting from ``counters`` (a resumed run's saved :meth:`counters`)."""
        with self._lock:
            for key in self._counts:
                self._counts[key] = int(counters.get(key, 0))
            self._latency_total = float(counters.get("latency_total", 0.0))

    # --- internals --------------------------------------------------------------------------------
    def _api_key(self) -> str:
        key = os.environ.get(self.config.api_key_env)
        if key:
            return key
        if _is_loopback(self.config.base_url):
            return PLACEHOLDER_KEY
        raise JudgeError(
            f"judge at {self.config.base_url} needs an API key: set the environment variable "
            f"{self.config.api_key_env} (judge.api_key_env names the variable, never the key itself)"
        )

    def _openai_client(self):
        """An OpenAI client for the current key; rebuilt only when the key in the environment changes."""
        from openai import OpenAI

        key = self._api_key()
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            if self._client is None or key_hash != self._client_key_hash:
                # Retries are ours (Retry-After, malformed bodies, empty answers), so the SDK's are off.
                self._client = OpenAI(
                    base_url=self.config.base_url, api_key=key, timeout=self.config.timeout, max_retries=0
                )
                self._client_key_hash = key_hash
            return self._client

    def _cache_path(self, prompt: str, system: str | None) -> Path | None:
        if not self.config.cache_dir or not self.config.cache:
            return None
        digest = hashlib.sha256(json.dumps([self.config.model, system, prompt]).encode()).hexdigest()
        return Path(self.config.cache_dir) / digest[:2] / f"{digest}.json"

    def _cache_get(self, path: Path | None) -> str | None:
        if path is None or not path.is_file():
            return None
        try:
            answer = json.loads(path.read_text(encoding="utf-8")).get("answer")
        except (OSError, ValueError):
            return None  # a corrupt entry is simply asked again and overwritten
        return answer if isinstance(answer, str) and answer.strip() else None

    def _cache_put(self, path: Path | None, answer: str) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"model": self.config.model, "answer": answer}, fh)
            os.replace(tmp, path)  # atomic: a killed run never leaves half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _count(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _ask_one(self, client, prompt: str, system: str | None) -> str | None:
        path = self._cache_path(prompt, system)
        cached = self._cache_get(path)
        if cached is not None:
            self._count("cache_hits")
            return cached
        if self._down.is_set():
            return None
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        # While the judge is known to be down, probe once per prompt instead of paying every backoff.
        attempts = 1 if self._warned_down else self.config.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self._count("retries")
            try:
                answer = self._attempt(client, messages)
            except _Retryable as exc:
                if attempt == attempts - 1:
                    log.debug("judge gave up after %d attempts: %s", attempt + 1, exc)
                    break
                time.sleep(exc.wait if exc.wait is not None else self.config.backoff * 2**attempt)
                continue
            except _Fatal as exc:
                log.debug("judge request failed without retry: %s", exc)
                break
            self._cache_put(path, answer)
            self._record_outcome(ok=True)
            return answer
        self._count("failures")
        self._record_outcome(ok=False)
        return None

    def _attempt(self, client, messages: list[dict[str, str]]) -> str:
        """One HTTP call; returns a non-empty answer or raises _Retryable / _Fatal."""
        import openai

        self._count("calls")
        start = time.perf_counter()
        try:
            response = client.chat.completions.create(
                model=self.config.model, messages=messages, **self._sampling()
            )
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 429 or status == 408 or status >= 500:
                raise _Retryable(f"HTTP {status}", _retry_after(exc.response.headers)) from None
            raise _Fatal(f"HTTP {status}") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise _Retryable(type(exc).__name__) from None
        except (openai.APIResponseValidationError, ValueError) as exc:
            raise _Retryable(f"malformed response ({type(exc).__name__})") from None
        answer = _answer_text(response)
        if not answer:
            raise _Retryable("empty or malformed answer")
        with self._lock:
            self._latency_total += time.perf_counter() - start
            self._counts["successes"] += 1
        return answer

    def _sampling(self) -> dict[str, Any]:
        """The optional request fields that are set (an unset one is left to the provider)."""
        fields = {"max_tokens": self.config.max_tokens, "temperature": self.config.temperature}
        return {k: v for k, v in fields.items() if v is not None}

    def _record_outcome(self, ok: bool) -> None:
        with self._lock:
            self._consecutive_failures = 0 if ok else self._consecutive_failures + 1
            down = self._consecutive_failures >= max(1, self.config.down_after)
            warn = down and not self._warned_down and not self.config.fail_fast
            if warn:
                self._warned_down = True
            if ok:
                self._warned_down = False  # a recovered judge may warn again if it goes down later
        if down and self.config.fail_fast:
            raise JudgeError(
                f"judge at {self.config.base_url} ({self.config.model}) failed {self._consecutive_failures} "
                "prompts in a row; stopping because judge.fail_fast is set"
            )
        if warn:
            log.warning(
                "!!! JUDGE DOWN: %s (%s) failed %d prompts in a row after retries; caption rewards are 0 "
                "until it answers again. Check judge.base_url, the server and the %s variable. !!!",
                self.config.base_url,
                self.config.model,
                self._consecutive_failures,
                self.config.api_key_env,
            )


COUNTERS = ("calls", "failures", "retries", "cache_hits", "successes", "latency_total")


def counter_stats(counters: dict[str, float]) -> dict[str, float]:
    """``judge/*`` metrics from raw counters (one client's, or several ranks' summed)."""
    successes = counters.get("successes", 0.0)
    return {
        "judge/calls": float(counters.get("calls", 0.0)),
        "judge/failures": float(counters.get("failures", 0.0)),
        "judge/retries": float(counters.get("retries", 0.0)),
        "judge/cache_hits": float(counters.get("cache_hits", 0.0)),
        "judge/latency_mean_s": counters.get("latency_total", 0.0) / successes if successes else 0.0,
    }


def summed_counters(counters: dict[str, float], device: Any = None) -> dict[str, float]:
    """``counters`` summed over every rank under torch.distributed (unchanged in a single process).

    Every rank must call it at the same point (it is a collective), as ``Trainer.log`` and checkpoint saves are.
    """
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return dict(counters)
    values = torch.tensor([float(counters.get(k, 0.0)) for k in COUNTERS], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
    return dict(zip(COUNTERS, values.tolist(), strict=True))


class _Fatal(Exception):
    """A failed attempt not worth retrying (e.g. HTTP 400/401/404)."""


def _answer_text(response: Any) -> str:
    """The stripped message content of a chat completion, '' when the response has none."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return ""
    return content.strip() if isinstance(content, str) else ""
