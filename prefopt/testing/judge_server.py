"""A loopback OpenAI-compatible judge for tests and demos, able to fail on purpose.

``JudgeServer`` answers ``POST /v1/chat/completions`` with a pluggable Python function of the request's
messages. A configurable share of calls fails in one of five ways, chosen deterministically from the
seed, the request content and how many times that content was already asked (so the outcome does not
depend on thread scheduling, and a retried request can succeed):

- ``"500"``: HTTP 500; ``"429"``: HTTP 429 with ``Retry-After``; ``"timeout"``: sleep past the client's
  timeout before answering; ``"malformed"``: a 200 whose body is not JSON; ``"empty"``: a 200 whose
  message content is empty.

``schedule`` gives exact behaviour for the first attempts of every distinct request instead
(e.g. ``["429", "ok"]``). Only binds 127.0.0.1; use it as a context manager.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("500", "429", "timeout", "malformed", "empty")

AnswerFn = Callable[[list[dict[str, Any]]], str]


def echo_answer(messages: list[dict[str, Any]]) -> str:
    """Default answer: the last user message wrapped as ``<think>…</think><answer>…</answer>``."""
    last = messages[-1]["content"] if messages else ""
    if isinstance(last, list):
        last = "".join(p.get("text", "") for p in last if isinstance(p, dict))
    return f"<think>echo</think><answer>{last}</answer>"


class JudgeServer:
    """An HTTP chat-completions server on 127.0.0.1 (random port) with deterministic fault injection."""

    def __init__(
        self,
        answer: AnswerFn = echo_answer,
        fail_rate: float = 0.0,
        faults: Sequence[str] = FAULTS,
        seed: int = 0,
        schedule: Sequence[str] | None = None,
        retry_after: float = 0.05,
        stall_s: float = 2.0,
        port: int = 0,
    ):
        unknown = (set(faults) | set(schedule or ())) - set(FAULTS) - {"ok"}
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; choose from {FAULTS}")
        self.answer = answer
        self.fail_rate = fail_rate
        self.faults = tuple(faults)
        self.seed = seed
        self.schedule = list(schedule) if schedule is not None else None
        self.retry_after = retry_after
        self.stall_s = stall_s
        self.bind_port = port  # 0: a free port
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.seen_headers: list[dict[str, str]] = []  # lower-cased names
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server."""
        return f"http://127.0.0.1:{self.port}/v1"

    def decide(self, body: bytes) -> str:
        """The outcome (``"ok"`` or a fault) for this request body, counting the attempt."""
        key = hashlib.sha256(body).hexdigest()
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] += 1
            self.requests += 1
        if self.schedule is not None:
            outcome = self.schedule[attempt] if attempt < len(self.schedule) else "ok"
        else:
            rng = random.Random(f"{self.seed}:{key}:{attempt}")
            outcome = rng.choice(self.faults) if rng.random() < self.fail_rate else "ok"
        with self._lock:
            self.outcomes[outcome] += 1
        return outcome

    def start(self) -> JudgeServer:
        """Bind 127.0.0.1 (on ``port``, or a free one) and serve in a daemon thread."""
        handler = type("_Handler", (_Handler,), {"judge": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.bind_port), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # stalled handlers must not hold up shutdown
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; stalled handlers are woken."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    judge: JudgeServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real servers (uvicorn, vLLM) set it: without it Nagle + delayed ACK add ~40 ms a request
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", "/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"unknown path {self.path}"}})
            return
        judge = self.judge
        with judge._lock:
            judge.seen_headers.append({k.lower(): v for k, v in self.headers.items()})
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "request body is not JSON"}})
            return
        outcome = judge.decide(body)
        if outcome == "500":
            self._send(500, {"error": {"message": "injected server error"}})
        elif outcome == "429":
            self._send(
                429, {"error": {"message": "injected rate limit"}}, {"Retry-After": str(judge.retry_after)}
            )
        elif outcome == "malformed":
            self._send_raw(200, b'{"choices": [ this is not json', "application/json")
        else:
            if outcome == "timeout":
                judge._stop.wait(judge.stall_s)
            text = "" if outcome == "empty" else judge.answer(request.get("messages", []))
            self._send(200, _completion(request.get("model", "judge"), text))

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_raw(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test); nothing to report


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{int(time.time() * 1e6)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
