"""MMHal-Bench (Sun et al., 2023): an LLM judge rates each answer 0-6 against the image contents
and the standard answer.

Data: MMHal's json list (``question_type, question_topic, image_id, image_src, image_content,
question, gt_answer``; ``model_answer`` in the released file is ignored when generating).  The image
is ``image`` when present, else the file name of ``image_src`` (looked up under ``--image-root``).
Scoring input: the same records with the model's answer in ``text`` (or ``model_answer``).

The judge is any OpenAI-compatible chat endpoint (``--judge-url``, ``--judge-model``, key from the
environment variable ``--judge-api-key-env``).  The rating is the last ``Rating: N`` (N in 0..6) of
its reply, or a reply that is just a digit; unreadable or failed replies are counted in
``n_unrated`` and left out of the means.  score = mean rating; hallucination_rate = share of ratings
< 3.  Per ``question_type`` as categories.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefopt.eval.bootstrap import bootstrap, by_category, safe_div
from prefopt.eval.common import Benchmark, EvalItem, EvalOptions, first, item_id, read_records
from prefopt.eval.judging import ask_judge

SYSTEM = "You are a careful grader of answers about images. You cannot see the image; trust the facts given."
TEMPLATE = """Rate how well a response answers a question about an image, focusing on hallucination
(claims about the image that the facts below do not support).

Image contents: {contents}
Question: {question}
Standard human answer: {gt}
Response to rate: {answer}

Scale:
6 - informative and analytical, no hallucination
5 - informative, no hallucination
4 - somewhat informative, no hallucination
3 - not informative, no hallucination
2 - informative but with hallucination
1 - somewhat informative, with hallucination
0 - not informative, with hallucination

Explain briefly, then end with a line "Rating: N" where N is 0-6."""


def parse_rating(reply: str | None) -> int | None:
    """The judge's rating 0-6: the last ``Rating: N``, or a reply that is a single digit; else None."""
    if not reply:
        return None
    found = re.findall(r"rating\s*[:=]?\s*\**\s*([0-6])\b", reply, flags=re.I)
    if found:
        return int(found[-1])
    bare = reply.strip().strip(".*")
    return int(bare) if bare in {str(i) for i in range(7)} else None


def mmhal_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean rating and share of ratings below 3, over rows that have a rating."""
    rated = [r["rating"] for r in rows if r["rating"] is not None]
    return {
        "score": safe_div(sum(rated), len(rated)),
        "hallucination_rate": safe_div(sum(x < 3 for x in rated), len(rated)),
    }


def _contents(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value or "")


class MMHal(Benchmark):
    """MMHal-Bench."""

    name = "mmhal"
    max_new_tokens = 256

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """MMHal questions."""
        items = []
        for line, row in read_records(path):
            question = first(row, ("question",), path, line)
            image = row.get("image") or str(first(row, ("image_src",), path, line)).rsplit("/", 1)[-1]
            meta = {
                "image": image,
                "question": question,
                "gt_answer": first(row, ("gt_answer",), path, line),
                "image_content": row.get("image_content", []),
                "question_type": row.get("question_type"),
            }
            items.append(EvalItem(item_id(row, line), str(question), [image], meta))
        return items

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """A record with question, standard answer, image contents and the model's answer."""
        answer = str(first(row, ("text", "model_answer"), path, line))
        return {
            "id": item_id(row, line),
            "question": str(first(row, ("question",), path, line)),
            "gt_answer": str(first(row, ("gt_answer",), path, line)),
            "answer": answer,
            "image_content": _contents(row.get("image_content")),
            "category": row.get("question_type"),
        }

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """Judge every answer, then the mean rating and hallucination rate with intervals."""
        prompts = [
            TEMPLATE.format(
                contents=r["image_content"], question=r["question"], gt=r["gt_answer"], answer=r["answer"]
            )
            for r in rows
        ]
        replies, stats = ask_judge(
            opts.judge, prompts, [r["id"] for r in rows], system=SYSTEM, out_dir=out_dir
        )
        for row, reply in zip(rows, replies, strict=True):
            row["rating"] = parse_rating(reply)
        kw = {"rounds": opts.rounds, "seed": opts.seed}
        return {
            "benchmark": self.name,
            "n": len(rows),
            "n_unrated": sum(r["rating"] is None for r in rows),
            "metrics": bootstrap(rows, mmhal_metrics, **kw),
            "categories": by_category(rows, mmhal_metrics, **kw),
            "judge": stats,
        }
