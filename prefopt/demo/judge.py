"""The demo's caption judge: answers a question from an image description alone, served over HTTP.

The caption reward sends ``Visual description: <caption> Question: <question>`` plus the R1 answer
instructions (:func:`prefopt.rewards.caption.judge_prompt`). On the shapes world a question is answerable
from the description exactly (is the asked shape named in it?), so the judge is a rule
(:func:`prefopt.data.synthetic.judge_answer`) rather than a language model; it is served by
:class:`prefopt.testing.JudgeServer` on 127.0.0.1, so the trainer uses the very client, retries, cache and
counters it uses against a hosted LLM.
"""

from __future__ import annotations

import re
from typing import Any

from prefopt.data.synthetic import judge_answer

# both caption-judge wordings: "Visual description:" (seed, the default) and "Image description:" (prefopt)
_DESCRIPTION = re.compile(r"(?:Visual|Image) description:\s*(.*?)\s*Question:\s*(.*?)\s*(?:\n|$)", re.S)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def shapes_judge(messages: list[dict[str, Any]]) -> str:
    """The judge's reply to a chat request: an R1-format yes/no answer read off the description."""
    user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    match = _DESCRIPTION.search(user)
    if match is None:
        return "<think>I was given no image description.</think><answer>no</answer>"
    description, question = match.group(1), match.group(2)
    return judge_answer(description, question)


def start_judge(seed: int = 0) -> Any:
    """A started :class:`~prefopt.testing.JudgeServer` answering with :func:`shapes_judge` (stop it after)."""
    from prefopt.testing.judge_server import JudgeServer

    return JudgeServer(answer=shapes_judge, seed=seed).start()
