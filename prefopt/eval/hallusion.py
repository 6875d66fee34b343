"""HallusionBench (Guan et al., 2024): yes/no questions over figure sets, some edited to contradict
common knowledge, some asked without the figure.

Data: the released ``HallusionBench.json`` (``category, subcategory, visual_input, set_id,
figure_id, question_id, question, gt_answer`` ("1" yes / "0" no), ``gt_answer_details``,
``filename`` (null when ``visual_input`` is "0": the question is asked without an image)).
Score only: ``--predictions`` = those rows with the model's answer in ``model_prediction`` (or
``text``), as the official ``HallusionBench_result.json``.

Correctness comes from an LLM judge (``--judge-url``) asked with the official prompt; its reply is
read by ``--scoring official`` (substring rule) or ``robust`` (first verdict word), see
:mod:`prefopt.eval.hallusion_scoring`, which also defines aAcc, qAcc, fAcc, the easy/hard split,
the per-figure consistency figures and the yes/no bias.  Without a judge only ``--scoring robust``
works: the answer is read with POPE's yes/no rule and compared with ``gt_answer``.  The official
LH/VI/Mixed failure analysis (which needs a second, "same answer?" judge call per question) is not
computed.  Bootstrap resamples whole figure sets so both groupings stay intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.errors import PrefoptError
from prefopt.eval.bootstrap import bootstrap, by_category
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    first,
    item_id,
    normalize_yes_no,
    read_records,
    says_no,
)
from prefopt.eval.hallusion_scoring import (
    CORRECT,
    core_metrics,
    judge_prompt,
    score_hallusion,
    verdict_robust,
)
from prefopt.eval.judging import ask_judge
from prefopt.eval.pope import SHORT_ANSWER

GROUP_KEYS = ("category", "subcategory", "set_id", "figure_id", "question_id")


def hallusion_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """aAcc, qAcc, fAcc and the easy/hard split of rows holding ``correct`` (see hallusion_scoring)."""
    return core_metrics(rows)


class HallusionBench(Benchmark):
    """HallusionBench yes/no questions."""

    name = "hallusion"
    max_new_tokens = 64

    def load_items(self, path: str | Path, opts: EvalOptions) -> list[EvalItem]:
        """Questions; rows without a figure are asked as text only."""
        items = []
        for line, row in read_records(path):
            meta = self._keys(row, path, line)
            meta["filename"] = row.get("filename")
            images = [row["filename"]] if row.get("filename") else []
            rid = "_".join(str(meta[k]) for k in GROUP_KEYS)
            items.append(EvalItem(rid, f"{meta['question']}\n{SHORT_ANSWER}", images, meta))
        return items

    def _keys(self, row: dict[str, Any], path: str | Path, line: int) -> dict[str, Any]:
        keys = {k: str(first(row, (k,), path, line)) for k in (*GROUP_KEYS, "question")}
        gt = normalize_yes_no(first(row, ("gt_answer",), path, line), path, line)
        keys["gt_answer"] = "1" if gt == "yes" else "0"
        keys["gt_answer_details"] = str(row.get("gt_answer_details") or "")
        # older exports lack visual_input: a question with a figure file is taken as an original figure
        keys["visual_input"] = str(row.get("visual_input", "1" if row.get("filename") else "0"))
        return keys

    def parse_prediction(self, row: dict[str, Any], path: str | Path, line: int, opts: EvalOptions) -> dict:
        """A record with the grouping keys, ground truth and the model's answer."""
        parsed = self._keys(row, path, line)
        parsed["answer"] = str(first(row, ("model_prediction", "text"), path, line))
        parsed["id"] = item_id(row, line, ("id",)) if "id" in row else "_".join(parsed[k] for k in GROUP_KEYS)
        return parsed

    def _replies(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None) -> tuple:
        scoring = getattr(opts, "scoring", None) or "official"
        if opts.judge is not None:
            prompts = [judge_prompt(r["question"], r["gt_answer_details"], r["answer"]) for r in rows]
            replies, stats = ask_judge(opts.judge, prompts, [r["id"] for r in rows], out_dir=out_dir)
            return replies, stats, "judge"
        if scoring == "official":
            raise PrefoptError(
                "official HallusionBench scoring needs an LLM judge: give --judge-url and --judge-model "
                "(or --scoring robust to compare yes/no readings with gt_answer)"
            )
        # no judge: a stand-in verdict from the yes/no reading, so the same metric code applies
        replies = [
            "correct" if ("0" if says_no(r["answer"]) else "1") == r["gt_answer"] else "incorrect"
            for r in rows
        ]
        return replies, None, "yes/no rule"

    def score(self, rows: list[dict[str, Any]], opts: EvalOptions, out_dir: Path | None = None) -> dict:
        """Judge (or read) each answer, then aAcc/qAcc/fAcc and the official breakdowns with intervals."""
        scoring = getattr(opts, "scoring", None) or "official"
        replies, stats, how = self._replies(rows, opts, out_dir)
        items, summary = score_hallusion(rows, replies, scoring)
        kw = {
            "rounds": opts.rounds,
            "seed": opts.seed,
            "group": lambda r: (r["category"], r["subcategory"], r["set_id"]),
        }
        result: dict[str, Any] = {"benchmark": self.name, **summary, "correctness": how}
        if how != "judge":
            result["parse_disagreements"] = 0  # no judge reply was read
        result["metrics"] = bootstrap(items, core_metrics, **kw)
        result["categories"] = by_category(items, core_metrics, **kw)
        if stats is not None:
            result["judge"] = stats
        return result


def judged_correct(reply: str | None) -> bool:
    """True when the judge's reply reads as ``correct`` (prefopt's robust reading)."""
    return verdict_robust(reply) == CORRECT
