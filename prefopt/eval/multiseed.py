"""Several runs per method (one per seed): per-seed tables, across-seed means with intervals, paired deltas
against a baseline method, and what each method cost.

* **Across-seed interval**: the mean over seeds of each metric with a two-sided 95 % Student-t interval,
  ``mean ± t(0.975, n−1) · sd / √n`` (sd with n−1). With one seed there is no interval (shown as "–").
* **Paired comparison**: for each seed, ``metric(method) − metric(baseline)`` on the same seed (same world,
  same held-out items, same cold start); the per-seed deltas get the same t-interval, and the table says in
  how many seeds the method was better. A delta is marked ``*`` when its interval excludes 0.
* Runs are paired by position: the i-th run of every method belongs to the i-th seed (a folder named
  ``seed-N`` on the path names the seed; otherwise the position does).
* **Cost**: read from ``RUN/cost.json`` (section ``"method"``: what the demo records) or, for any other
  evaluation, from the evaluated model's ``cost.json`` (``"train"`` + ``"reference_cache"``) and the
  evaluations' ``"eval"`` sections; averaged over seeds.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.cost import add, read_cost
from prefopt.errors import PrefoptError
from prefopt.eval.common import read_json
from prefopt.eval.report import LOWER_IS_BETTER, comparison, flatten, load_run

#: t(0.975, df) for df = 1..30 (beyond 30 the normal 1.96 is within 2 %).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)

#: Cost fields shown in the cost table (all are means over seeds).
COST_FIELDS = ("wall_s", "cpu_s", "forward_tokens", "generated_tokens", "judge_calls")


def t_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean with a 95 % Student-t interval over ``values`` (no interval for fewer than two values)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "sd": None, "n": 0}
    mean = math.fsum(vals) / n
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "sd": None, "n": 1}
    sd = statistics.stdev(vals)
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    half = t * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "n": n}


def seed_label(path: str | Path, index: int) -> str:
    """``seed-N`` taken from the path, or ``#i`` (the run's position)."""
    found = re.findall(r"seed-(\d+)", str(Path(path).resolve()))
    return f"seed-{found[-1]}" if found else f"#{index}"


def _overall(per_bench: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float]:
    out = {}
    for bench, metrics in per_bench.items():
        for name, iv in flatten(metrics, categories=False).items():
            if "/" not in name:
                out[(bench, name)] = float(iv["value"])
    return out


def run_cost(run_dir: str | Path) -> dict[str, Any]:
    """``{"training": ..., "eval": ...}`` of one evaluation run (see the module docstring for the sources)."""

    run = Path(run_dir)
    method = read_cost(run).get("method")
    if method:
        return {"training": method.get("training") or {}, "eval": method.get("eval") or {}}
    folders = [run] if (run / "metrics.json").is_file() else sorted(p for p in run.iterdir() if p.is_dir())
    evals, models = [], []
    for folder in folders:
        evals.append(read_cost(folder).get("eval"))
        info = folder / "run_info.json"
        model = read_json(info).get("model") if info.is_file() else None
        if model and model not in models:
            models.append(model)
    training = add(*(s for m in models for s in (read_cost(m).get("train"), read_cost(m).get("reference_cache"))))
    return {"training": training, "eval": add(*evals)}


def multiseed(methods: dict[str, list[str]], baseline: str | None = None) -> dict[str, Any]:
    """The across-seed table of ``{method: [run dir per seed]}`` (see the module docstring)."""
    if not methods:
        raise PrefoptError("give at least one method")
    names = list(methods)
    baseline = baseline or names[0]
    if baseline not in methods:
        raise PrefoptError(f"baseline '{baseline}' is not one of the methods {names}")
    counts = {m: len(d) for m, d in methods.items()}
    if len(set(counts.values())) != 1 or not all(counts.values()):
        raise PrefoptError(f"every method needs the same number of runs (one per seed), got {counts}")
    n = counts[baseline]
    seeds = [seed_label(methods[baseline][i], i) for i in range(n)]
    loaded = {m: [load_run(d) for d in dirs] for m, dirs in methods.items()}
    per_seed = [comparison({m: loaded[m][i] for m in names}, baseline, categories=False) for i in range(n)]
    values = {m: [_overall(r) for r in loaded[m]] for m in names}
    keys = [k for k in values[baseline][0] if all(k in v for m in names for v in values[m])]
    rows = []
    for bench, metric in keys:
        row: dict[str, Any] = {"benchmark": bench, "metric": metric, "lower_is_better": metric in LOWER_IS_BETTER,
                               "per_seed": {m: [v[(bench, metric)] for v in values[m]] for m in names}}
        row["mean"] = {m: t_interval(row["per_seed"][m]) for m in names}
        row["paired"] = {}
        for m in names:
            if m == baseline:
                continue
            deltas = [a - b for a, b in zip(row["per_seed"][m], row["per_seed"][baseline], strict=True)]
            better = sum((d < 0) if row["lower_is_better"] else (d > 0) for d in deltas)
            row["paired"][m] = {**t_interval(deltas), "deltas": deltas, "better_in": better}
        rows.append(row)
    costs = {m: [run_cost(d) for d in methods[m]] for m in names}
    unparsed = {m: {b: [int(r[b].get("n_unparsed") or 0) for r in loaded[m] if b in r] for b in loaded[m][0]}
                for m in names}
    answers = {m: {b: [int(r[b].get("n") or 0) for r in loaded[m] if b in r] for b in loaded[m][0]} for m in names}
    return {
        "baseline": baseline, "methods": names, "seeds": seeds, "rows": rows,
        "runs": {m: [str(d) for d in methods[m]] for m in names},
        "per_seed_tables": dict(zip(seeds, per_seed, strict=True)),
        "cost": {m: _mean_cost(costs[m]) for m in names},
        "unparsed": {m: {b: {"unparsed": sum(v), "answers": sum(answers[m][b])} for b, v in per.items()}
                     for m, per in unparsed.items()},
        "interval": "95 % Student-t over seeds (mean ± t·sd/√n)",
        "paired": "per-seed deltas against the baseline (same seed, same held-out items), 95 % t-interval",
    }


def _mean_cost(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per part (training, eval): the mean over seeds of every cost field recorded in all seeds."""
    out: dict[str, Any] = {}
    for part in ("training", "eval"):
        fields = {k for r in records for k in (r.get(part) or {})}
        out[part] = {
            k: math.fsum(r[part][k] for r in records) / len(records)
            for k in sorted(fields)
            if all(isinstance((r.get(part) or {}).get(k), int | float) for r in records)
        }
    return out
