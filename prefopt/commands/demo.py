"""The embedded default: reduce hallucination of a tiny VLM with GRPO and with SymMPO, on CPU, offline.

Stages (each a real prefopt subcommand; its recipe is written to OUT/recipes/): make-data (synthetic
shapes world) -> tiny-model -> cold-start SFT -> variance-guided selection -> GRPO (accuracy, format and
caption rewards, the caption judged over HTTP by a local OpenAI-compatible server; NTK term) -> SymMPO
from the same cold start -> POPE and CHAIR on held-out scenes for all three -> compare.
Writes OUT/report/comparison.{md,json,png} and OUT/summary.md. A re-run with the same --out keeps the
stages that finished. Runs on one torch thread unless --threads (or PREFOPT_THREADS / OMP_NUM_THREADS)
says otherwise: the numbers depend on the thread count, never on how busy the machine is.

Seeds: --seeds 0,1,2 (or 0-4) runs one demo per seed into OUT/seed-N and writes the across-seed report
OUT/report/comparison.{md,json,png} + cost_vs_metric.png (means with 95 % t-intervals over seeds, paired
per-seed differences to the cold start, what each method cost). --seed N alone keeps the one-run layout.
Budget: GRPO and SymMPO take the same number of optimizer updates; the report shows what each cost.

README: --render-readme rewrites the demo block of README.md from docs/demo/comparison.json
(--render-readme --from OUT first stores OUT/report/ of a --seeds run in docs/demo/).

Example:
  prefopt demo --out outputs/demo
  prefopt demo --seeds 0,1,2,3,4 --out outputs/demo-seeds
"""

from __future__ import annotations

import argparse

from prefopt.models.tiny import DEFAULT_FAMILY, TINY_FAMILIES

NAME = "demo"
HELP = "run the whole online-vs-offline study on a tiny model and synthetic data (CPU, offline)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prefopt demo``."""
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (CI smoke run)")
    parser.add_argument(
        "--family", default=DEFAULT_FAMILY, choices=TINY_FAMILIES, help="tiny model architecture"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, model and training")
    parser.add_argument("--seeds", help="several seeds (0,1,2 or 0-4): one run each in OUT/seed-N + across-seed report")
    parser.add_argument("--render-readme", action="store_true",
                        help="rewrite README.md's demo block from docs/demo/comparison.json (runs nothing)")
    parser.add_argument("--from", dest="source", metavar="OUT",
                        help="with --render-readme: first copy OUT/report/ of a --seeds run into docs/demo/")
    parser.add_argument("--fresh", action="store_true", help="redo every stage even when it finished before")
    # One torch thread unless --threads / PREFOPT_THREADS / OMP_NUM_THREADS say otherwise: the thread count
    # changes float reduction order, and over 750 cold-start steps that decides whether a seed learns (so a
    # busy machine must not change the numbers), and on the tiny models one thread is as fast as two.
    parser.set_defaults(_default_threads=1)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the summary."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never needs the hub
    if args.render_readme:
        from prefopt.demo.readme import render_readme

        print(f"rendered {render_readme(source=args.source)}")
        return 0
    if args.seeds is not None:
        import shlex
        import sys

        from prefopt.demo.seeds import parse_seeds, run_seeds

        seeds = parse_seeds(args.seeds)
        command = "prefopt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["demo"] else None
        run_seeds(args.out, seeds, quick=args.quick, family=args.family, fresh=args.fresh, command=command)
        return 0
    from prefopt.demo import run_demo

    run_demo(args.out, quick=args.quick, family=args.family, seed=args.seed, fresh=args.fresh)
    return 0
