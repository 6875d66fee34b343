"""``prefopt compare`` over three runs in one- and multi-benchmark layouts."""

from __future__ import annotations

import json

import pytest

from prefopt.errors import DataError


def iv(value, low, high):
    return {"value": value, "ci_low": low, "ci_high": high}


def write_metrics(path, bench, metrics, categories=None):
    path.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": bench, "n": 10, "metrics": metrics}
    if categories:
        data["categories"] = categories
    (path / "metrics.json").write_text(json.dumps(data))


@pytest.fixture
def three_runs(tmp_path):
    """base: POPE only, one-benchmark layout; dpo and grpo: POPE + CHAIR, multi-benchmark layout.

    POPE f1: base .80 [.75, .85]; dpo .90 [.86, .94] (no overlap -> significant, +0.100 *);
    grpo .83 [.78, .88] (overlaps -> +0.030 (n.s.)).  random/f1: dpo .91 - base .82 = +0.090, overlapping
    -> (n.s.); grpo has no categories.  CHAIR exists only in dpo and grpo.
    """
    write_metrics(
        tmp_path / "base",
        "pope",
        {"f1": iv(0.80, 0.75, 0.85), "accuracy": iv(0.7, 0.6, 0.8)},
        {"random": {"f1": iv(0.82, 0.7, 0.9)}},
    )
    write_metrics(
        tmp_path / "dpo" / "pope",
        "pope",
        {"f1": iv(0.90, 0.86, 0.94), "accuracy": iv(0.75, 0.7, 0.8)},
        {"random": {"f1": iv(0.91, 0.8, 0.95)}},
    )
    write_metrics(tmp_path / "dpo" / "chair", "chair", {"chair_s": iv(0.3, 0.2, 0.4)})
    write_metrics(
        tmp_path / "grpo" / "pope", "pope", {"f1": iv(0.83, 0.78, 0.88), "accuracy": iv(0.72, 0.6, 0.8)}
    )
    write_metrics(tmp_path / "grpo" / "chair", "chair", {"chair_s": iv(0.1, 0.05, 0.15)})
    return [tmp_path / n for n in ("base", "dpo", "grpo")]


def test_compare_three_runs(three_runs, tmp_path, capsys):
    from prefopt.cli import main

    out = tmp_path / "report"
    assert main(["compare", *map(str, three_runs), "--baseline", "base", "--out", str(out)]) == 0
    table = (out / "comparison.md").read_text()
    lines = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in table.splitlines()}
    header = table.splitlines()[0]
    assert "base (baseline)" in header and "Δ dpo − base" in header and "Δ grpo − base" in header
    f1 = lines[("pope", "f1")]
    assert "0.800 [0.750, 0.850]" in f1 and "0.900 [0.860, 0.940]" in f1
    assert "+0.100 *" in f1 and "+0.030 (n.s.)" in f1
    assert "+0.090 (n.s.)" in lines[("pope", "random/f1")] and lines[("pope", "random/f1")].count("–") == 2
    chair = lines[("chair", "chair_s ↓")]
    assert chair.count("–") == 3 and "0.100 [0.050, 0.150]" in chair  # baseline missing: no Δ
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    data = json.loads((out / "comparison.json").read_text())
    f1_row = next(r for r in data["rows"] if r["metric"] == "f1")
    assert f1_row["delta"]["dpo"]["significant"] is True and f1_row["delta"]["grpo"]["significant"] is False
    assert "pope" in capsys.readouterr().out


def test_compare_default_baseline_and_errors(three_runs, tmp_path):
    from prefopt.eval.report import compare_runs

    table = compare_runs(three_runs, tmp_path / "r", categories=False)
    assert table["baseline"] == "base" and all("/" not in r["metric"] for r in table["rows"])
    with pytest.raises(Exception, match="baseline 'nope' is not one of the runs"):
        compare_runs(three_runs, tmp_path / "r", baseline="nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metrics.json"):
        compare_runs([tmp_path / "empty"], tmp_path / "r")


def test_compare_names_the_scoring(tmp_path):
    from prefopt.eval.report import compare_runs, markdown_table

    for name, scoring in (("a", "official"), ("b", "official"), ("c", "robust")):
        (tmp_path / name).mkdir()
        data = {"benchmark": "pope", "n": 3, "scoring": scoring, "metrics": {"f1": iv(0.5, 0.4, 0.6)},
                "mean_of_splits": {"f1": iv(0.55, 0.45, 0.65)}}
        (tmp_path / name / "metrics.json").write_text(json.dumps(data))
    same = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "r1")
    assert "Scoring: official (--scoring) for every run." in markdown_table(same)
    assert any(r["metric"] == "mean_of_splits/f1" for r in same["rows"])
    mixed = compare_runs([tmp_path / "a", tmp_path / "c"], tmp_path / "r2")
    assert "WARNING: the runs were scored differently" in markdown_table(mixed)
