"""Regenerate tests/data/demo_quick_snapshot.json: run ``prefopt demo --quick`` (seed 0) and store its metrics.

  OMP_NUM_THREADS=1 python scripts/update_demo_snapshot.py [--out DIR]

Commit the new snapshot together with the change that moved the numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    """Run the quick demo into a fresh folder and write the snapshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="demo output folder (default: a new temporary folder)")
    args = parser.parse_args()
    from prefopt.cli import main as prefopt_main
    from prefopt.demo.snapshot import write_snapshot

    out = args.out or tempfile.mkdtemp(prefix="prefopt-demo-quick-")
    if prefopt_main(["demo", "--quick", "--seed", "0", "--fresh", "--out", out]) != 0:
        return 1
    print(f"wrote {write_snapshot(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
