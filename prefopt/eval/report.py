"""Side-by-side comparison of evaluation runs: one markdown table with intervals and differences to a
baseline run, the same numbers as JSON, and a bar chart with error bars.

A run directory holds one benchmark (``RUN/metrics.json``) or several (``RUN/pope/metrics.json``,
``RUN/chair/metrics.json``, ...).  A difference is marked significant (``*``) only when the two 95 %
intervals do not overlap; overlapping intervals are marked ``n.s.``, a conservative test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.errors import DataError, PrefoptError
from prefopt.eval.common import read_json

Interval = dict[str, float]

#: Metrics where a smaller value is better (marked ↓ in the table); yes_ratio is best near 0.5.
LOWER_IS_BETTER = {"chair_s", "chair_i", "hallucination_rate"}


def load_run(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{benchmark: metrics.json content}`` of a one- or multi-benchmark run directory."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError("run directory not found", path=str(run))
    if (run / "metrics.json").is_file():
        data = _metrics(run / "metrics.json")
        return {str(data.get("benchmark") or run.name): data}
    found = {
        sub.name: _metrics(sub / "metrics.json")
        for sub in sorted(run.iterdir())
        if (sub / "metrics.json").is_file()
    }
    if not found:
        raise DataError("no metrics.json here or in its subdirectories", path=str(run))
    return found


def _metrics(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise DataError("not a prefopt metrics.json (no 'metrics' mapping)", path=str(path))
    for name, value in data["metrics"].items():
        if not isinstance(value, dict) or "value" not in value:
            raise DataError(f"metric '{name}' has no 'value'", path=str(path))
    return data


def flatten(metrics: dict[str, Any], categories: bool = True) -> dict[str, Interval]:
    """``{metric: interval}`` with per-category metrics as ``category/metric``."""
    flat = dict(metrics["metrics"])
    # POPE over several splits: the mean of the per-split metrics is the number papers report
    flat.update({f"mean_of_splits/{name}": iv for name, iv in (metrics.get("mean_of_splits") or {}).items()})
    if categories:
        for cat, values in (metrics.get("categories") or {}).items():
            flat.update({f"{cat}/{name}": iv for name, iv in values.items()})
    return flat


def run_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """Short unique names: the directory name, with its parent when two runs share a name."""
    paths = [Path(p).resolve() for p in run_dirs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def overlap(a: Interval, b: Interval) -> bool:
    """Whether two intervals share at least one point."""
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def _cell(iv: Interval | None) -> str:
    if iv is None:
        return "–"
    return f"{iv['value']:.3f} [{iv['ci_low']:.3f}, {iv['ci_high']:.3f}]"


def _delta(iv: Interval | None, base: Interval | None) -> tuple[str, dict[str, Any] | None]:
    if iv is None or base is None:
        return "–", None
    diff = iv["value"] - base["value"]
    significant = not overlap(iv, base)
    return f"{diff:+.3f} {'*' if significant else '(n.s.)'}", {"diff": diff, "significant": significant}


def comparison(runs: dict[str, dict[str, dict[str, Any]]], baseline: str, categories: bool = True) -> dict:
    """Rows ``(benchmark, metric, {run: interval}, {run: delta})`` over the union of all runs' metrics."""
    benches: list[str] = []
    for per_bench in runs.values():
        benches += [b for b in per_bench if b not in benches]
    rows = []
    for bench in benches:
        flat = {name: flatten(per[bench], categories) if bench in per else {} for name, per in runs.items()}
        metrics: list[str] = []
        for values in flat.values():
            metrics += [m for m in values if m not in metrics]
        for metric in metrics:
            cells = {name: flat[name].get(metric) for name in runs}
            deltas = {name: _delta(cells[name], cells[baseline])[1] for name in runs if name != baseline}
            rows.append({"benchmark": bench, "metric": metric, "runs": cells, "delta": deltas})
    scoring = {name: {b: per[b].get("scoring", "unrecorded") for b in per} for name, per in runs.items()}
    return {"baseline": baseline, "runs": list(runs), "rows": rows, "scoring": scoring}


def scoring_note(table: dict) -> str:
    """One line naming the scoring of the runs, or a warning when they were scored differently."""
    per = table.get("scoring") or {}
    used = sorted({s for benches in per.values() for s in benches.values()})
    if len(used) <= 1:
        return f"Scoring: {used[0] if used else 'unrecorded'} (--scoring) for every run."
    detail = "; ".join(f"{run}: " + ", ".join(f"{b} {s}" for b, s in benches.items()) for run, benches in per.items())
    return f"WARNING: the runs were scored differently ({detail}); their numbers are not comparable."


def markdown_table(table: dict) -> str:
    """The comparison as a markdown table (value [95 % CI] per run, then Δ to the baseline per run)."""
    base, names = table["baseline"], table["runs"]
    others = [n for n in names if n != base]
    head = ["benchmark", "metric"] + [f"{n} (baseline)" if n == base else n for n in names]
    head += [f"Δ {n} − {base}" for n in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        metric = row["metric"] + (" ↓" if row["metric"].rsplit("/", 1)[-1] in LOWER_IS_BETTER else "")
        cells = [row["benchmark"], metric] + [_cell(row["runs"][n]) for n in names]
        cells += [_delta(row["runs"][n], row["runs"][base])[0] for n in others]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "Values are point estimates with bootstrap 95 % intervals. Δ marked * when the two intervals "
        "do not overlap; (n.s.) when they overlap (not significant). ↓: lower is better."
    )
    return "\n".join(lines) + "\n\n" + note + "\n" + scoring_note(table) + "\n"


def bar_chart(table: dict, path: Path) -> Path:
    """A PNG with one panel per benchmark: overall metrics as grouped bars, 95 % intervals as error bars."""
    import matplotlib.pyplot as plt

    fig = draw_bars(table)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_bars(table: dict) -> Any:
    """The figure of :func:`bar_chart` (each run one colour in every panel, one legend naming every run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    benches = list(dict.fromkeys(r["benchmark"] for r in table["rows"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(max(5, 4.5 * len(benches)), 4), squeeze=False)
    width = 0.8 / max(1, len(table["runs"]))
    # one fixed colour per run across every panel: the axis colour cycle would restart (or skip) per panel
    colours = {name: f"C{k % 10}" for k, name in enumerate(table["runs"])}
    for ax, bench in zip(axes[0], benches, strict=True):
        rows = [r for r in table["rows"] if r["benchmark"] == bench and "/" not in r["metric"]]
        for k, name in enumerate(table["runs"]):
            xs, ys, err = [], [], [[], []]
            for i, row in enumerate(rows):
                iv = row["runs"][name]
                if iv is None:
                    continue
                xs.append(i + (k - (len(table["runs"]) - 1) / 2) * width)
                ys.append(iv["value"])
                err[0].append(max(0.0, iv["value"] - iv["ci_low"]))
                err[1].append(max(0.0, iv["ci_high"] - iv["value"]))
            if xs:
                ax.bar(xs, ys, width, yerr=err, capsize=3, label=name, color=colours[name])
        ax.set_xticks(range(len(rows)), [r["metric"] for r in rows], rotation=30, ha="right")
        ax.set_title(bench)
    # one legend for the figure, listing every run (a panel may lack some runs)
    handles = [Patch(facecolor=colours[name], label=name) for name in table["runs"]]
    axes[0][-1].legend(handles=handles, fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def compare_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    baseline: str | None = None,
    categories: bool = True,
) -> dict:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.png`` for the runs; returns the table."""
    if not run_dirs:
        raise PrefoptError("give at least one run directory")
    names = run_names(run_dirs)
    runs = {name: load_run(d) for name, d in zip(names, run_dirs, strict=True)}
    if baseline is None:
        baseline = names[0]
    if baseline not in runs:
        matches = [
            n for n, d in zip(names, run_dirs, strict=True) if str(d).rstrip("/") == baseline.rstrip("/")
        ]
        if not matches:
            raise PrefoptError(f"baseline '{baseline}' is not one of the runs {names}")
        baseline = matches[0]
    table = comparison(runs, baseline, categories)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(markdown_table(table), encoding="utf-8")
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    bar_chart(table, out / "comparison.png")
    return table
