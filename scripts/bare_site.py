#!/usr/bin/env python3
"""Rehearse the bare GPU machine on this one: a ``site-packages`` folder of links to only what it will hold.

That is torch, transformers, peft, accelerate and their installed dependencies, torchvision, and the
distributions ``scripts/gpu_wheels.sh`` carries (its ``WHEELS`` list plus rouge-score). Run the check with
``python -S`` so that the environment's own site-packages stays off the path:

    python scripts/bare_site.py /tmp/bare
    PYTHONPATH=/tmp/bare/site-packages:$PWD python -S scripts/gpu_check.py --device cpu --config tiny
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ON_DEVICE = ("torch", "transformers", "peft", "accelerate", "torchvision")


def closure(roots: list[str]) -> set[str]:
    """Installed distributions reachable from ``roots`` through their (non-extra) requirements."""
    env = {**default_environment(), "extra": ""}
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                stack.append(req.name)
    return seen


def carried() -> list[str]:
    """Distribution names in scripts/gpu_wheels.sh (``NAME==VERSION`` entries)."""
    text = (Path(__file__).with_name("gpu_wheels.sh")).read_text()
    return sorted(set(re.findall(r"([A-Za-z0-9_.-]+)==[0-9]", text)) - {"torchvision"})


def main(out: str) -> int:
    """Link every allowed distribution's top-level files into ``out/site-packages``."""
    target = Path(out) / "site-packages"
    target.mkdir(parents=True, exist_ok=True)
    names = closure(list(ON_DEVICE)) | {n.lower() for n in carried()}  # carried wheels: no deps of their own
    for name in sorted(names):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            print(f"not installed here: {name}", file=sys.stderr)
            continue
        tops = {f.parts[0] for f in dist.files or [] if f.parts[0] != ".." and not f.parts[0].endswith(".pth")}
        for top in tops:
            src, dst = Path(str(dist.locate_file(top))), target / top
            if src.exists() and not dst.exists():
                os.symlink(src, dst)
    print(f"{len(names)} distributions linked into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bare"))
