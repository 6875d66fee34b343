"""Compare evaluation runs side by side: a markdown table of every metric with 95 % intervals and the
difference to a baseline run (marked n.s. when the intervals overlap), plus a bar chart.

  prefopt compare evals/base evals/dpo evals/grpo --baseline base --out reports/hallucination

Several runs per method (one per seed) with --method NAME=DIR[,DIR...] (repeat per method; a DIR may be a
quoted glob, expanded in sorted order); the i-th run of each method is paired with the i-th of the others:

  prefopt compare --method cold='out/seed-*/eval/cold_start' --method grpo='out/seed-*/eval/grpo' \\
      --baseline cold --out reports/seeds

That report holds the across-seed mean of every metric with a 95 % Student-t interval over seeds, the
paired per-seed differences to the baseline (with their t-interval and in how many seeds the method was
better), what each method cost (wall/CPU seconds, forward and generated tokens, judge calls, from the
runs' cost.json) and each difference per unit of cost, then one table per seed.

A run directory holds one benchmark (RUN/metrics.json) or several (RUN/pope/metrics.json, ...).
Writes OUT/comparison.md, OUT/comparison.json and OUT/comparison.png (with --method also
OUT/cost_vs_metric.png); without --method, OUT/cost.md when the runs recorded a cost.
"""

from __future__ import annotations

import argparse

NAME = "compare"
USES_TORCH = False  # no thread pool to size
HELP = "compare evaluation runs: table with intervals, differences to a baseline, bar chart"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prefopt compare``."""
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="evaluation output directories")
    parser.add_argument(
        "--method", action="append", default=[], metavar="NAME=DIR[,DIR...]",
        help="several runs (one per seed) of one method; repeat per method; DIR may be a quoted glob",
    )
    parser.add_argument("--baseline", help="run name (directory name) or method to compare against; default: the first")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--no-categories", action="store_true", help="leave per-category metrics out of the table"
    )


def parse_methods(specs: list[str]) -> dict[str, list[str]]:
    """``["grpo=a,b*"]`` -> ``{"grpo": ["a", "b1", "b2"]}`` (globs expanded, sorted); bad specs are refused."""
    import glob

    from prefopt.errors import PrefoptError

    methods: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, dirs = spec.partition("=")
        if not sep or not name or not dirs:
            raise PrefoptError(f"--method {spec!r}: expected NAME=DIR[,DIR...]")
        if name in methods:
            raise PrefoptError(f"--method {name} given twice: list all its runs in one --method")
        found: list[str] = []
        for part in (p for p in dirs.split(",") if p):
            matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
            if not matches:
                raise PrefoptError(f"--method {name}: '{part}' matches no directory")
            found += matches
        methods[name] = found
    return methods


def run(args: argparse.Namespace) -> int:
    """Write the comparison and print the table."""
    from prefopt.errors import PrefoptError

    if args.method:
        if args.runs:
            raise PrefoptError("give either RUN_DIRs or --method NAME=DIRS, not both")
        from prefopt.eval.multiseed_report import markdown, write_multiseed

        table = write_multiseed(parse_methods(args.method), args.out, baseline=args.baseline)
        print(markdown(table))
        return 0
    if not args.runs:
        raise PrefoptError("give the RUN_DIRs to compare (or --method NAME=DIR[,DIR...])")
    from prefopt.eval.report import compare_runs, markdown_table

    table = compare_runs(args.runs, args.out, baseline=args.baseline, categories=not args.no_categories)
    print(markdown_table(table))
    _write_costs(args.runs, table["runs"], args.out)
    return 0


def _write_costs(run_dirs: list[str], names: list[str], out: str) -> None:
    """OUT/cost.md: what each run cost, when any run recorded it (cost.json)."""
    from pathlib import Path

    from prefopt.eval.multiseed import COST_FIELDS, run_cost

    costs = {name: run_cost(d) for name, d in zip(names, run_dirs, strict=True)}
    if not any(c["training"] or c["eval"] for c in costs.values()):
        return
    head = ["run", *[f"train {f}" for f in COST_FIELDS], *[f"eval {f}" for f in COST_FIELDS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cost in costs.items():
        cells = [cost[part].get(f) for part in ("training", "eval") for f in COST_FIELDS]
        lines.append("| " + " | ".join([name, *("–" if c is None else f"{c:g}" for c in cells)]) + " |")
    text = "\n".join(lines) + "\n"
    (Path(out) / "cost.md").write_text(text, encoding="utf-8")
    print("Cost (cost.json of each run and its model):\n\n" + text)
