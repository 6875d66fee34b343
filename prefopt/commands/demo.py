"""The embedded default: reduce hallucination of a tiny VLM with GRPO and with SymMPO, on CPU, offline.

Stages (each a real prefopt subcommand; its recipe is written to OUT/recipes/): make-data (synthetic
shapes world) -> tiny-model -> cold-start SFT -> variance-guided selection -> GRPO (accuracy, format and
caption rewards, the caption judged over HTTP by a local OpenAI-compatible server; NTK term) -> SymMPO
from the same cold start -> POPE and CHAIR on held-out scenes for all three -> compare.
Writes OUT/report/comparison.{md,json,png} and OUT/summary.md. A re-run with the same --out keeps the
stages that finished. Default profile: about 8 minutes on a 2-core CPU; --quick: under 3 minutes.

Example:
  prefopt demo --out outputs/demo
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
    parser.add_argument("--fresh", action="store_true", help="redo every stage even when it finished before")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the summary."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never needs the hub
    from prefopt.demo import run_demo

    run_demo(args.out, quick=args.quick, family=args.family, seed=args.seed, fresh=args.fresh)
    return 0
