"""A local OpenAI-compatible caption judge for tiny runs and tests, on 127.0.0.1 only.

``prefopt judge serve`` answers ``POST /v1/chat/completions`` the way the caption reward expects (an R1
``<think>…</think><answer>…</answer>`` reply). ``--answer shapes`` (default) is the demo's judge: it reads
the image description of the synthetic shapes world and says whether the asked shape is named in it;
``--answer echo`` repeats the question. For a real judge model use any OpenAI-compatible server instead
(``transformers serve``, ``vllm serve``, a hosted API) and point ``rewards.judge.base_url`` at it.

  prefopt judge serve --port 8765 &
  prefopt grpo --config recipes/tiny/qwen_grpo.yaml ... rewards.judge.base_url=http://127.0.0.1:8765/v1
"""

from __future__ import annotations

import argparse

NAME = "judge"
HELP = "serve a local OpenAI-compatible caption judge on 127.0.0.1 (for tiny GRPO runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="judge_command", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="answer chat completions on 127.0.0.1:PORT until stopped")
    serve.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free)")
    serve.add_argument("--answer", choices=("shapes", "echo"), default="shapes",
                       help="shapes: the demo's shapes-world judge (default); echo: repeat the question")
    serve.add_argument("--fail-rate", type=float, default=0.0, help="share of requests that fail on purpose")
    serve.add_argument("--seed", type=int, default=0, help="seed of the injected failures")
    serve.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    serve.add_argument("--max-requests", type=int, default=None, help="stop after this many requests")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (or a --max-* limit)."""
    import signal
    import threading
    import time

    from prefopt.errors import PrefoptError
    from prefopt.testing.judge_server import JudgeServer, echo_answer

    if not 0 <= args.port <= 65535:
        raise PrefoptError(f"--port must be in [0, 65535], got {args.port}")
    if not 0.0 <= args.fail_rate <= 1.0:
        raise PrefoptError(f"--fail-rate must be in [0, 1], got {args.fail_rate}")
    if args.answer == "shapes":
        from prefopt.demo.judge import shapes_judge as answer
    else:
        answer = echo_answer
    server = JudgeServer(answer=answer, fail_rate=args.fail_rate, seed=args.seed, port=args.port)
    try:
        server.start()
    except OSError as err:
        raise PrefoptError(f"cannot listen on 127.0.0.1:{args.port}: {err.strerror or err}") from err
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"judge ({args.answer}) listening on {server.base_url}", flush=True)
    start = time.monotonic()
    try:
        while not stop.wait(0.2):
            if args.max_seconds is not None and time.monotonic() - start >= args.max_seconds:
                break
            if args.max_requests is not None and server.requests >= args.max_requests:
                break
    finally:
        server.stop()
    print(f"judge stopped after {server.requests} requests", flush=True)
    return 0
