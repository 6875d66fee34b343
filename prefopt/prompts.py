"""Instruction templates for GRPO prompts (SPEC 1.1) and the LLaVA-CoT -> four-stage rewrite (SPEC 1.7).

Shared by data, rewards, evaluation, SFT and GRPO, so it sits at the bottom layer (it needs only
:mod:`prefopt.errors`); ``prefopt.grpo.prompts`` re-exports it for earlier callers.

``four_stage``: the "Ground What You See" format ``<prethink> <caption> <think> <answer>`` (the paper's
"planning" stage is tagged ``prethink`` as in its code). ``r1``: the classic ``<think> <answer>`` format
of DeepSeek-R1 / Video-R1, also used to ask the caption judge. Both end with a per-type suffix telling the
model what goes inside ``<answer>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prefopt.errors import DataError

TEMPLATES = ("four_stage", "r1")

FOUR_STAGE_INSTRUCTION = (
    "{question}\n"
    "First plan which regions of the visual input matter for the question between <prethink> </prethink> "
    "tags. Then describe what you see in those regions between <caption> </caption> tags. "
    "Then reason step by step between <think> </think> tags, "
    "and finally give your final answer between <answer> </answer> tags."
)

R1_INSTRUCTION = (
    "{question}\n"
    "Please think about this question step by step. Provide your reasoning between the <think> </think> "
    "tags, and then give your final answer between the <answer> </answer> tags."
)

#: What the model must put inside ``<answer>``, by problem type.
TYPE_SUFFIX = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
    "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "OCR": " Please transcribe text from the image/video clearly and provide your text answer within the "
    "<answer> </answer> tags.",
    "free-form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "yes/no": " Please answer with only yes or no within the <answer> </answer> tags.",
    "math": " Please provide the final mathematical expression or value within the <answer> </answer> tags.",
    "grounding": " Please provide the bounding box as [x1, y1, x2, y2] within the <answer> </answer> tags.",
}


def render_options(problem: str, options: Sequence[str]) -> str:
    """``problem + "Options:\\n"`` then one option per line, as the seed code renders them (unchanged if none)."""
    options = [str(o).strip() for o in options if str(o).strip()]
    if not options:
        return problem
    return problem + "Options:\n" + "\n".join(options)


def build_prompt(
    problem: str, problem_type: str, options: Sequence[str] = (), template: str = "four_stage"
) -> str:
    """The full instruction text for one question: question (+ options), stage instructions, type suffix."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if problem_type not in TYPE_SUFFIX:
        raise DataError(f"unknown problem_type {problem_type!r}; expected one of {', '.join(TYPE_SUFFIX)}")
    question = render_options(problem.strip(), options)
    body = FOUR_STAGE_INSTRUCTION if template == "four_stage" else R1_INSTRUCTION
    return body.format(question=question) + TYPE_SUFFIX[problem_type]


# LLaVA-CoT stage tag -> four-stage tag.
_COT_STAGES = (
    ("SUMMARY", "prethink"),
    ("CAPTION", "caption"),
    ("REASONING", "think"),
    ("CONCLUSION", "answer"),
)


def _cot_answer_text(record: Any) -> str:
    """The assistant text of a LLaVA-CoT record (the last ``gpt``/``assistant`` turn) or a plain string."""
    if isinstance(record, str):
        return record
    if not isinstance(record, Mapping):
        raise DataError(f"a LLaVA-CoT record must be a dict or a string, got {type(record).__name__}")
    turns = record.get("conversations") or record.get("messages")
    if turns:
        answers = [t for t in turns if t.get("from", t.get("role")) in ("gpt", "assistant")]
        if not answers:
            raise DataError(f"record {record.get('id', '?')}: no gpt/assistant turn to rewrite")
        value = answers[-1].get("value", answers[-1].get("content"))
        return value if isinstance(value, str) else "".join(p.get("text", "") for p in value or [])
    for key in ("answer", "value", "response"):
        if isinstance(record.get(key), str):
            return record[key]
    raise DataError(f"record {record.get('id', '?')}: no 'conversations', 'messages' or 'answer' field")


def llava_cot_to_four_stage(record: Any) -> str:
    """Rewrite a LLaVA-CoT answer (SUMMARY/CAPTION/REASONING/CONCLUSION) as prethink/caption/think/answer."""
    text = _cot_answer_text(record)
    parts = []
    for src, dst in _COT_STAGES:
        found = re.findall(rf"<{src}>(.*?)</{src}>", text, flags=re.DOTALL)
        if len(found) != 1:
            rid = record.get("id", "?") if isinstance(record, Mapping) else "?"
            raise DataError(f"record {rid}: expected exactly one <{src}>…</{src}> stage, found {len(found)}")
        parts.append(f"<{dst}>{found[0].strip()}</{dst}>")
    return "\n".join(parts)
