"""Rewrite README.md's generated demo block from docs/demo/comparison.json.

  python scripts/render_readme.py              # re-render from the stored run
  python scripts/render_readme.py --from OUT   # first store OUT/report/ of a `prefopt demo --seeds` run

Same as ``prefopt demo --render-readme [--from OUT]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    """Render (and optionally store) the demo results into README.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", help="a `prefopt demo --seeds` output folder to store first")
    args = parser.parse_args()
    from prefopt.demo.readme import render_readme

    print(f"rendered {render_readme(source=args.source)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
