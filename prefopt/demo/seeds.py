"""The demo over several seeds: each seed a full demo run in ``OUT/seed-N``, then one across-seed report.

``OUT/seed-N/`` has the layout of a one-seed demo (:mod:`prefopt.demo.pipeline`; stages resumable);
``OUT/report/comparison.{md,json,png}`` and ``cost_vs_metric.png`` hold the across-seed comparison
(:mod:`prefopt.eval.multiseed`), with the command, seeds, profile, budget rule, versions and threads
recorded under ``"provenance"``.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import prefopt
from prefopt.demo.pipeline import METHODS, run_demo
from prefopt.demo.profiles import BUDGET_RULE
from prefopt.errors import PrefoptError
from prefopt.eval.multiseed_report import markdown, write_multiseed
from prefopt.models.tiny import DEFAULT_FAMILY


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> a list of distinct seeds in the given order."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise PrefoptError(f"--seeds {text!r}: expected integers like 0,1,2 or 0-4") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise PrefoptError(f"--seeds {text!r}: give distinct seeds, e.g. 0,1,2")
    return seeds


def provenance(command: str, seeds: Sequence[int], profile_name: str, family: str) -> dict[str, Any]:
    """What a reader needs to reproduce the run: command, seeds, profile, budget rule, versions, threads."""
    import torch
    import transformers
    import trl


    return {
        "command": command,
        "seeds": list(seeds),
        "profile": profile_name,
        "family": family,
        "budget": BUDGET_RULE,
        "versions": {"prefopt": prefopt.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__,
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "platform": sys.platform,
    }


def run_seeds(
    out: str | Path,
    seeds: Sequence[int],
    quick: bool = False,
    family: str | None = None,
    fresh: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo once per seed into ``OUT/seed-N`` and write the across-seed report; returns its table."""

    family = family or DEFAULT_FAMILY
    root = Path(out).resolve()
    for i, seed in enumerate(seeds):
        log(f"=== seed {seed} ({i + 1} of {len(seeds)}) -> {root / f'seed-{seed}'}")
        run_demo(root / f"seed-{seed}", quick=quick, family=family, seed=seed, fresh=fresh, log=log)
    methods = {m: [str(root / f"seed-{s}" / "eval" / m) for s in seeds] for m in METHODS}
    command = command or f"prefopt demo{' --quick' if quick else ''} --seeds {','.join(map(str, seeds))}"
    extra = {"provenance": provenance(command, seeds, "quick" if quick else "default", family)}
    table = write_multiseed(methods, root / "report", baseline="cold_start", extra=extra)
    log("\n" + markdown(table))
    log(f"across-seed report: {root / 'report' / 'comparison.md'}")
    return table
