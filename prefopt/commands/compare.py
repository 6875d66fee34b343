"""Compare evaluation runs side by side: a markdown table of every metric with 95 % intervals and the
difference to a baseline run (marked n.s. when the intervals overlap), plus a bar chart.

  prefopt compare evals/base evals/dpo evals/grpo --baseline base --out reports/hallucination

A run directory holds one benchmark (RUN/metrics.json) or several (RUN/pope/metrics.json, ...).
Writes OUT/comparison.md, OUT/comparison.json and OUT/comparison.png.
"""

from __future__ import annotations

import argparse

NAME = "compare"
USES_TORCH = False  # no thread pool to size
HELP = "compare evaluation runs: table with intervals, differences to a baseline, bar chart"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prefopt compare``."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluation output directories")
    parser.add_argument("--baseline", help="run name (directory name) to compare against; default: the first")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--no-categories", action="store_true", help="leave per-category metrics out of the table"
    )


def run(args: argparse.Namespace) -> int:
    """Write the comparison and print the table."""
    from prefopt.eval.report import compare_runs, markdown_table

    table = compare_runs(args.runs, args.out, baseline=args.baseline, categories=not args.no_categories)
    print(markdown_table(table))
    return 0
