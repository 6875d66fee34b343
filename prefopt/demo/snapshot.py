"""The metrics of a demo run as a small JSON snapshot, and its comparison with a stored one.

``tests/data/demo_quick_snapshot.json`` holds the snapshot of ``prefopt demo --quick`` (seed 0);
``tests/test_demo.py`` re-runs the quick demo and compares: counts exactly, floats to 1e-9. When a change
moves the numbers on purpose, regenerate it with ``python scripts/update_demo_snapshot.py`` and commit it
with the change (and the stored results and README, see :mod:`prefopt.demo.readme`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from prefopt.demo.pipeline import METHODS

SNAPSHOT = Path(__file__).resolve().parents[2] / "tests" / "data" / "demo_quick_snapshot.json"
TOLERANCE = 1e-9


def snapshot(out: str | Path) -> dict[str, Any]:
    """``{method: {benchmark: {n, n_unparsed, metrics: {name: [value, low, high]}}}}`` plus the selection."""

    out = Path(out)
    snap: dict[str, Any] = {"methods": {}}
    for method in METHODS:
        per = {}
        for path in sorted((out / "eval" / method).glob("*/metrics.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            per[path.parent.name] = {
                "n": data.get("n"),
                "n_unparsed": data.get("n_unparsed", 0),
                "metrics": {k: [v["value"], v["ci_low"], v["ci_high"]] for k, v in sorted(data["metrics"].items())},
            }
        snap["methods"][method] = per
    selected = json.loads((out / "runs" / "select" / "selected.json").read_text(encoding="utf-8"))
    snap["selected"] = sorted(str(r.get("id", i)) for i, r in enumerate(selected))
    return snap


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Every place where ``actual`` differs (ints, strings exactly; floats beyond 1e-9)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}/{k}: missing" for k in expected if k not in actual]
        out += [f"{where}/{k}: unexpected" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], f"{where}/{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items, expected {len(expected)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        ok = isinstance(actual, int | float) and isinstance(expected, int | float) and (
            math.isclose(expected, actual, rel_tol=0, abs_tol=TOLERANCE) or (math.isnan(expected) and math.isnan(actual)))
        return [] if ok else [f"{where}: {actual!r}, expected {expected!r}"]
    return [] if expected == actual else [f"{where}: {actual!r}, expected {expected!r}"]


def write_snapshot(out: str | Path, path: str | Path = SNAPSHOT) -> Path:
    """Store the snapshot of the demo run in ``out`` at ``path``."""
    path = Path(path)
    path.write_text(json.dumps(snapshot(out), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path
