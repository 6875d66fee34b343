"""Evaluate a model on a hallucination benchmark, or score a predictions file.

Generate and score (greedy, batched, resumable: answered questions in OUT/predictions.jsonl are kept):
  prefopt eval pope --model runs/symmpo/merged --data pope/coco_pope_random.json \\
      --image-root coco/val2014 --out evals/symmpo/pope
Score only (prefopt's own predictions.jsonl, or official answer files joined with official question files):
  prefopt eval pope --predictions answers.jsonl --out evals/baseline/pope
  prefopt eval pope --predictions ANSWERS.jsonl --data coco_pope_random.json --out DIR
  prefopt eval chair --predictions CAPS.jsonl --annotations ANN_DIR --out DIR
  prefopt eval amber --predictions answers.json --data query_all.json --annotations annotations.json --out D
--scoring official (default) reads answers exactly as each benchmark's official script does, quirks
included; --scoring robust is prefopt's careful reading (docs/evaluation.md).  metrics.json records the
scoring, how many answers the two readings classify differently (parse_disagreements) and how many the
chosen one cannot parse (n_unparsed, also printed as a warning).
Judge-based benchmarks (mmhal, and hallusion when a judge is given) read the API key from the
environment variable named by --judge-api-key-env.

Benchmarks: pope, chair, amber, mmhal, hallusion, mcq (MMStar/MMBench), refcoco.  Output:
OUT/metrics.json (every metric with a bootstrap 95 % interval), OUT/predictions.jsonl, OUT/run_info.json.
"""

from __future__ import annotations

import argparse
import json

from prefopt.models.registry import families

NAME = "eval"
HELP = "evaluate a model (or a predictions file) on POPE, CHAIR, AMBER, MMHal, HallusionBench, MCQ, RefCOCO"
BENCHMARKS = ("pope", "chair", "amber", "mmhal", "hallusion", "mcq", "refcoco")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prefopt eval``."""
    parser.add_argument("benchmark", choices=BENCHMARKS)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model directory or hub id to generate answers with")
    src.add_argument(
        "--predictions",
        action="append",
        help="score this predictions/answers file instead of generating (repeat: one per --data split)",
    )
    parser.add_argument(
        "--data",
        action="append",
        help="benchmark file (its published layout); needed with --model; with --predictions the official "
        "question file(s) the answers are joined with (repeatable)",
    )
    parser.add_argument(
        "--scoring",
        choices=("official", "robust"),
        default="official",
        help="official: the benchmark's own script's parsing and metrics (default); robust: prefopt's reading",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--family", default=None, choices=families(), help="model family (detected from config.json when omitted)"
    )
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    parser.add_argument("--image-root", help="directory that relative image paths are resolved under")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, help="generation budget (default: per benchmark)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions")
    parser.add_argument(
        "--annotations",
        help="CHAIR: COCO annotation folder (instances_val2014.json, captions_val2014.json) or an instances json; "
        "AMBER: annotations.json",
    )
    parser.add_argument(
        "--bbox-format", choices=("xyxy", "xywh"), default="xyxy", help="RefCOCO ground-truth boxes"
    )
    parser.add_argument(
        "--box-scale",
        choices=("abs", "unit", "thousand"),
        default="abs",
        help="RefCOCO predicted boxes: pixels, 0-1 fractions or 0-1000",
    )
    parser.add_argument(
        "--template",
        choices=("plain", "four_stage"),
        default="plain",
        help="POPE prompt: LLaVA's short-answer instruction, or the four-stage GWYS prompt (<answer> is scored)",
    )
    parser.add_argument(
        "--vocabulary", help="CHAIR: JSON {class: [synonyms]} (or world.json of make-data) instead of COCO's"
    )
    parser.add_argument("--bootstrap-rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    judge = parser.add_argument_group("LLM judge (mmhal, hallusion)")
    judge.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. https://api.deepseek.com/v1")
    judge.add_argument("--judge-model", help="judge model name")
    judge.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key"
    )


def _judge_config(args: argparse.Namespace):
    if not args.judge_url:
        return None
    from prefopt.errors import PrefoptError
    from prefopt.rewards.judge import JudgeConfig

    if not args.judge_model:
        raise PrefoptError("--judge-url needs --judge-model")
    # benchmark judges decode greedily, as their official scripts ask (the caption reward leaves it to the provider)
    return JudgeConfig(
        base_url=args.judge_url, model=args.judge_model, api_key_env=args.judge_api_key_env, temperature=0.0
    )


def run(args: argparse.Namespace) -> int:
    """Generate (optionally) and score; print the metrics."""
    from prefopt.errors import PrefoptError
    from prefopt.eval.common import EvalOptions
    from prefopt.eval.runner import evaluate

    if args.limit is not None and args.limit <= 0:
        raise PrefoptError(f"--limit must be a positive number of questions, got {args.limit}")
    if args.model and args.data and len(args.data) > 1:
        raise PrefoptError("--model takes one --data file: run one evaluation per split")
    opts = EvalOptions(
        scoring=args.scoring,
        rounds=args.bootstrap_rounds,
        seed=args.seed,
        annotations=args.annotations,
        judge=_judge_config(args),
        bbox_format=args.bbox_format,
        box_scale=args.box_scale,
        vocabulary=args.vocabulary,
        template=args.template,
    )
    metrics = evaluate(
        args.benchmark,
        args.out,
        opts,
        model=args.model,
        data=(args.data[0] if args.model else args.data) if args.data else None,
        predictions=args.predictions,
        image_root=args.image_root,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        family=args.family,
        limit=args.limit,
        dtype=args.dtype,
        device=args.device,
    )
    summary = {k: round(v["value"], 4) for k, v in metrics["metrics"].items()}
    head = {"benchmark": args.benchmark, "n": metrics["n"], "scoring": metrics["scoring"]}
    head.update({k: metrics[k] for k in ("parse_disagreements", "n_unparsed") if metrics.get(k) is not None})
    print(json.dumps({**head, **summary}))
    return 0
