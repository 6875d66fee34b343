"""Caption reward (SPEC 1.3): can a text-only judge answer the question from the model's caption alone?

For each completion the ``<caption>`` text and the question (with its options, no image) go to the
judge, which is asked to answer in the R1 format; the judge's answer is scored against the solution with
the accuracy rule of the problem type (:func:`prefopt.rewards.answers.score`), times ``weight``; a reply
without a complete ``<answer>…</answer>`` scores 0. A missing or empty caption, or a judgement that
failed after retries, gives 0 and is counted.

Two prompt wordings (``rewards.caption_prompt``): ``seed`` (default) asks as the released GWYS code does
(system "You are a helpful assistant", "Visual description: … Question: …" and the R1 instruction in the
seed's words), so rewards compare with the paper's runs; ``prefopt`` is a rewording that tells the judge in
the system turn that it cannot see the image and asks the R1 format in plain imperative English. The
rewording reads better but has not been measured against the seed's on a real judge, hence not default.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from prefopt.grpo.prompts import TYPE_SUFFIX, build_prompt, render_options
from prefopt.rewards.answers import score
from prefopt.rewards.judge import JudgeClient
from prefopt.rewards.text import completion_text, extract_tag, prompt_text

JUDGE_SYSTEM = (
    "You answer questions about an image you cannot see, using only the description of the image that "
    "you are given. Follow the answer format exactly."
)


SEED_JUDGE_SYSTEM = "You are a helpful assistant"
#: The released GWYS caption-judge request, in its wording (spacing and grammar kept so rewards compare).
SEED_JUDGE_TEMPLATE = (
    "Please answer the question only according to the text description of the visual information below "
    "without any visual information.\n"
    "Visual description:\n {caption} \n"
    "Question:\n {question} \n"
    "first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "i.e., <think> reasoning process here </think><answer> answer here </answer>"
)
PROMPTS = ("seed", "prefopt")


def judge_prompt(
    caption: str,
    problem: str,
    problem_type: str,
    options: list[str] | tuple[str, ...] = (),
    style: str = "seed",
) -> str:
    """The text sent to the judge: the caption, then the question with R1 answer instructions for its type."""
    if style == "seed":
        if problem_type not in TYPE_SUFFIX:
            raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {', '.join(TYPE_SUFFIX)}")
        # as the seed's format_question: problem + "Options:\n" + each option and a newline
        question = render_options(problem.strip(), options) + ("\n" if options else "")
        return SEED_JUDGE_TEMPLATE.format(caption=caption, question=question) + TYPE_SUFFIX[problem_type]
    if style != "prefopt":
        raise ValueError(f"unknown caption judge prompt {style!r}; choose one of {', '.join(PROMPTS)}")
    question = render_options(f"Image description: {caption}\n\nQuestion: {problem.strip()}\n", options)
    return build_prompt(question, problem_type, template="r1")


def judge_system(style: str = "seed") -> str:
    """The system turn that goes with :func:`judge_prompt` of the same ``style``."""
    return SEED_JUDGE_SYSTEM if style == "seed" else JUDGE_SYSTEM


def _column(value: Any, n: int) -> list[Any]:
    """A per-row list from a TRL keyword argument (a list per row, or one value for the whole batch)."""
    if isinstance(value, (list, tuple)) and len(value) == n:
        return list(value)
    return [value] * n


class CaptionReward:
    """TRL reward function giving ``weight`` × the judge's accuracy when it reads only the caption."""

    __name__ = "caption"

    def __init__(self, judge: JudgeClient, weight: float = 1.0, prompt: str = "seed"):
        if prompt not in PROMPTS:
            raise ValueError(f"unknown caption judge prompt {prompt!r}; choose one of {', '.join(PROMPTS)}")
        self.judge = judge
        self.weight = weight
        self.prompt = prompt
        self._lock = threading.Lock()
        self._counts = {"completions": 0, "empty": 0, "failed": 0, "reward_sum": 0.0}
        # judge requests started after generation (start), keyed by their prompts; one batch at a time
        self._pending: dict[tuple[str, ...], Future] = {}
        self._starter: ThreadPoolExecutor | None = None

    def _asks(self, prompts, completions, problem_type, problem, options) -> list[tuple[int, str]]:
        """``(row, judge prompt)`` for every completion with a non-empty caption."""
        n = len(completions)
        types = _column(problem_type, n)
        problems = _column(problem, n) if problem is not None else [None] * n
        # Without a `problem` column the question is read from the prompt's last user turn.
        problems = [q if q else prompt_text(p) for q, p in zip(problems, prompts, strict=True)]
        options = _column(options or (), n)
        asks: list[tuple[int, str]] = []
        for i, completion in enumerate(completions):
            caption = extract_tag(completion_text(completion), "caption")
            if caption:
                asks.append((i, judge_prompt(caption, problems[i], types[i], options[i] or (), self.prompt)))
        return asks

    def start(
        self,
        prompts: list[Any],
        completions: list[Any],
        problem_type: list[str] | str,
        problem: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Send this batch's judge requests now, in the background (the judge's own bounded pool).

        The trainer calls it right after generation, so the judge's latency overlaps the log-prob forwards;
        the reward call with the same completions collects the answers (:meth:`__call__`). Same prompts, same
        ``ask_many``, hence the same answers, cache entries and counters as the synchronous path.
        """
        asks = self._asks(prompts, completions, problem_type, problem, kwargs.get("options"))
        texts = tuple(text for _, text in asks)
        if not texts:
            return
        with self._lock:
            if self._starter is None:
                self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge-start")
            system = judge_system(self.prompt)
            self._pending = {texts: self._starter.submit(self.judge.ask_many, list(texts), system=system)}

    def _answers(self, texts: tuple[str, ...]) -> list[str | None]:
        """Answers started by :meth:`start` for exactly these prompts, else asked now."""
        with self._lock:
            pending, self._pending = self._pending.pop(texts, None), {}
        if pending is not None:
            return pending.result()
        return self.judge.ask_many(list(texts), system=judge_system(self.prompt))

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        solution: list[str],
        problem_type: list[str] | str,
        problem: list[str] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """One reward per completion (0 for a missing caption or a failed judgement)."""
        n = len(completions)
        types = _column(problem_type, n)
        rewards = [0.0] * n
        asks = self._asks(prompts, completions, problem_type, problem, kwargs.get("options"))
        answers = self._answers(tuple(text for _, text in asks)) if asks else []
        failed = 0
        for (i, _), answer in zip(asks, answers, strict=True):
            if answer is None:
                failed += 1
                continue
            rewards[i] = self.weight * score(answer, solution[i], types[i])
        with self._lock:
            self._counts["completions"] += n
            self._counts["empty"] += n - len(asks)
            self._counts["failed"] += failed
            self._counts["reward_sum"] += sum(rewards)
        log_metric = kwargs.get("log_metric")  # TRL's per-batch metric hook, when present
        if callable(log_metric) and n:
            log_metric("caption/empty_frac", (n - len(asks)) / n)
            log_metric("caption/judge_failed_frac", failed / n)
        return rewards

    def stats(self) -> dict[str, float]:
        """Judge counters plus ``caption/empty``, ``caption/failed`` and ``caption/mean`` since creation."""
        with self._lock:
            c = dict(self._counts)
        out = dict(self.judge.stats())
        out["caption/completions"] = float(c["completions"])
        out["caption/empty"] = float(c["empty"])
        out["caption/failed"] = float(c["failed"])
        out["caption/mean"] = c["reward_sum"] / c["completions"] if c["completions"] else 0.0
        return out
