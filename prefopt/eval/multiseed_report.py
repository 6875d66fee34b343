"""Write the across-seed comparison of :mod:`prefopt.eval.multiseed`: markdown, JSON and two charts.

``OUT/comparison.md`` (across-seed means, paired deltas, cost, metric per cost, then one table per seed),
``OUT/comparison.json`` (everything), ``OUT/comparison.png`` (means with intervals) and
``OUT/cost_vs_metric.png`` (each headline metric against the training cost in forward tokens and seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefopt.eval.multiseed import COST_FIELDS, multiseed
from prefopt.eval.report import bar_chart, markdown_table


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _mean_cell(iv: dict[str, Any]) -> str:
    if iv["ci_low"] is None:
        return _num(iv["mean"])
    return f"{iv['mean']:.3f} [{iv['ci_low']:.3f}, {iv['ci_high']:.3f}]"


def _delta_cell(p: dict[str, Any]) -> str:
    text = f"{p['mean']:+.3f}"
    if p["ci_low"] is not None:
        sig = p["ci_low"] > 0 or p["ci_high"] < 0
        text += f" [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]{' *' if sig else ''}"
    return f"{text} ({p['better_in']}/{p['n']})"


def means_table(table: dict[str, Any]) -> str:
    """Across-seed mean [95 % t-interval] per method, then the paired Δ per method (better in k of n seeds)."""
    base, names = table["baseline"], table["methods"]
    others = [m for m in names if m != base]
    head = ["benchmark", "metric", *[f"{m} (baseline)" if m == base else m for m in names]]
    head += [f"Δ {m} − {base} (paired)" for m in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        metric = row["metric"] + (" ↓" if row["lower_is_better"] else "")
        cells = [row["benchmark"], metric, *[_mean_cell(row["mean"][m]) for m in names]]
        cells += [_delta_cell(row["paired"][m]) for m in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unparsed_line(table: dict[str, Any]) -> str:
    """Answers no scorer could read (counted wrong), summed over seeds, where there were any."""
    parts = [f"{m} {b}: {c['unparsed']} of {c['answers']}" for m, per in (table.get("unparsed") or {}).items()
             for b, c in per.items() if c["unparsed"]]
    return ("Unparsed answers (counted wrong), all seeds: " + "; ".join(parts) + ".\n") if parts else ""


def cost_table(table: dict[str, Any]) -> str:
    """Per method: training and evaluation cost (means over seeds)."""
    head = ["method", *[f"train {f}" for f in COST_FIELDS], "eval wall_s", "eval forward_tokens"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in table["methods"]:
        train, ev = table["cost"][m]["training"], table["cost"][m]["eval"]
        cells = [m, *[_fmt_cost(train.get(f)) for f in COST_FIELDS]]
        cells += [_fmt_cost(ev.get("wall_s")), _fmt_cost(ev.get("forward_tokens"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_cost(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"


def per_cost_table(table: dict[str, Any]) -> str:
    """Paired Δ of every metric per million training forward tokens and per training CPU hour."""
    base = table["baseline"]
    others = [m for m in table["methods"] if m != base]
    head = ["benchmark", "metric", *[f"Δ {m} per M fwd tok" for m in others], *[f"Δ {m} per CPU-h" for m in others]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        cells = [row["benchmark"], row["metric"]]
        for key, scale in (("forward_tokens", 1e6), ("cpu_s", 3600.0)):
            for m in others:
                spent = table["cost"][m]["training"].get(key)
                cells.append(_num(row["paired"][m]["mean"] / (spent / scale)) if spent else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(table: dict[str, Any]) -> str:
    """The whole across-seed report as markdown."""
    seeds = ", ".join(table["seeds"])
    parts = [
        f"# Across {len(table['seeds'])} seed(s): {seeds}\n",
        means_table(table),
        f"\nMean over seeds with its {table['interval']}. Δ: {table['paired']}; * when that interval excludes "
        "0; (k/n): the method was better in k of n seeds. ↓: lower is better.\n",
        unparsed_line(table),
        "## Cost (mean per seed)\n",
        cost_table(table),
        "\nTraining cost counts what each method spent after the shared cold start (wall and process CPU "
        "seconds, tokens fed through forward passes incl. padding and generation steps, generated tokens, "
        "judge requests). The cold start's row is its own SFT.\n",
        "## Metric per cost\n",
        per_cost_table(table),
        "\n## Per seed\n",
    ]
    for seed, seed_table in table["per_seed_tables"].items():
        parts += [f"### {seed}\n", markdown_table(seed_table)]
    return "\n".join(parts) + "\n"


def cost_chart(table: dict[str, Any], path: Path, metrics: int = 4) -> Path:
    """One panel per headline metric: its across-seed mean (± interval) against training forward tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"][:metrics]
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        for m in table["methods"]:
            x = table["cost"][m]["training"].get("forward_tokens") or 0
            iv = row["mean"][m]
            low = iv["mean"] - iv["ci_low"] if iv["ci_low"] is not None else 0.0
            high = iv["ci_high"] - iv["mean"] if iv["ci_high"] is not None else 0.0
            ax.errorbar([max(x, 1)], [iv["mean"]], yerr=[[low], [high]], fmt="o", capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_xlabel("training forward tokens")
        ax.set_title(f"{row['benchmark']} {row['metric']}")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def means_chart(table: dict[str, Any], path: Path) -> Path:
    """Grouped bars of the across-seed means with their intervals, one panel per benchmark."""

    rows = []
    for row in table["rows"]:
        runs = {}
        for m in table["methods"]:
            iv = row["mean"][m]
            lo = iv["ci_low"] if iv["ci_low"] is not None else iv["mean"]
            hi = iv["ci_high"] if iv["ci_high"] is not None else iv["mean"]
            runs[m] = {"value": iv["mean"], "ci_low": lo, "ci_high": hi}
        rows.append({"benchmark": row["benchmark"], "metric": row["metric"], "runs": runs})
    return bar_chart({"runs": table["methods"], "rows": rows}, path)


def write_multiseed(methods: dict[str, list[str]], out_dir: str | Path, baseline: str | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute and write the across-seed report (see the module docstring); returns its table."""
    table = multiseed(methods, baseline)
    if extra:
        table.update(extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(markdown(table), encoding="utf-8")
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    means_chart(table, out / "comparison.png")
    cost_chart(table, out / "cost_vs_metric.png")
    return table
