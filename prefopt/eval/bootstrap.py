"""Seeded bootstrap confidence intervals for benchmark metrics.

Every benchmark computes its metrics with a function ``rows -> {name: value}``; :func:`bootstrap`
re-runs that function on ``rounds`` resamples (rows drawn with replacement, same count) and reports
the 2.5th and 97.5th percentiles.  The generator is ``numpy.random.default_rng(seed)``, so the same
rows, rounds and seed always give the same interval.

When ``group`` is given the resampling unit is a group of rows (e.g. all questions about one
figure in HallusionBench): whole groups are drawn, and each drawn copy gets its own group tag so
that "all answers in the group correct" metrics stay well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MetricFn = Callable[[Sequence[dict[str, Any]]], dict[str, float]]

#: Row key that :func:`bootstrap` sets on copies of a resampled group (a distinct tag per draw).
DRAW_KEY = "_bootstrap_draw"


def interval(value: float, low: float, high: float) -> dict[str, float]:
    """The metrics.json record of one metric: point value and 95 % interval."""
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}


def bootstrap(
    rows: Sequence[dict[str, Any]],
    metric_fn: MetricFn,
    *,
    rounds: int = 100,
    seed: int = 0,
    alpha: float = 0.05,
    group: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, dict[str, float]]:
    """``{metric: {value, ci_low, ci_high}}``: point estimates on ``rows`` and percentile bootstrap intervals."""
    point = metric_fn(rows)
    if not rows or rounds <= 0:
        return {k: interval(v, v, v) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    units = _units(rows, group)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(rounds):
        picks = rng.integers(0, len(units), size=len(units))
        if group is None:
            resampled = [units[i][0] for i in picks]
        else:
            resampled = [{**row, DRAW_KEY: draw} for draw, i in enumerate(picks) for row in units[i]]
        values = metric_fn(resampled)
        for k in point:
            samples[k].append(values[k])
    lo_q, hi_q = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {
        k: interval(point[k], np.percentile(samples[k], lo_q), np.percentile(samples[k], hi_q)) for k in point
    }


def _units(rows: Sequence[dict[str, Any]], group: Callable[[dict[str, Any]], Any] | None) -> list[list[dict]]:
    if group is None:
        return [[row] for row in rows]
    grouped: dict[Any, list[dict]] = {}
    for row in rows:
        grouped.setdefault(group(row), []).append(row)
    return list(grouped.values())


def safe_div(num: float, den: float) -> float:
    """``num / den``, or 0.0 when the denominator is zero (an empty class has no precision)."""
    return float(num) / float(den) if den else 0.0


def by_category(
    rows: Sequence[dict[str, Any]],
    metric_fn: MetricFn,
    key: str = "category",
    **kw: Any,
) -> dict[str, dict[str, dict[str, float]]]:
    """Bootstrapped metrics per value of ``row[key]`` (rows without the key are skipped)."""
    cats: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get(key) not in (None, ""):
            cats.setdefault(str(row[key]), []).append(row)
    return {name: bootstrap(sub, metric_fn, **kw) for name, sub in sorted(cats.items())}
