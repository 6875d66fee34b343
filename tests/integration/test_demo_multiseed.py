"""Across-seed report: t-intervals, paired per-seed deltas, cost lookup, `compare --method`, README block."""

from __future__ import annotations

import json
import math

import pytest

from prefopt.cli import main
from prefopt.errors import PrefoptError
from prefopt.eval.multiseed import multiseed, run_cost, seed_label, t_interval

# POPE accuracy per seed; CHAIRi per seed (lower is better)
BASE = {"accuracy": [0.70, 0.80, 0.90], "chair_i": [0.10, 0.10, 0.10]}
GRPO = {"accuracy": [0.75, 0.90, 0.95], "chair_i": [0.05, 0.06, 0.04]}


def iv(v):
    return {"value": v, "ci_low": v - 0.01, "ci_high": v + 0.01}


def write_method(root, method, per_seed, cost=None):
    dirs = []
    for s in range(3):
        run = root / f"seed-{s}" / "eval" / method
        for bench, metric in (("pope", "accuracy"), ("chair", "chair_i")):
            (run / bench).mkdir(parents=True, exist_ok=True)
            data = {"benchmark": bench, "n": 10, "metrics": {metric: iv(per_seed[metric][s])}}
            (run / bench / "metrics.json").write_text(json.dumps(data))
        if cost is not None:
            (run / "cost.json").write_text(json.dumps({"method": {"training": cost(s), "eval": {"wall_s": 1.0}}}))
        dirs.append(str(run))
    return dirs


@pytest.fixture
def runs(tmp_path):
    base = write_method(tmp_path, "cold_start", BASE, lambda s: {"wall_s": 10.0, "forward_tokens": 100})
    grpo = write_method(tmp_path, "grpo", GRPO, lambda s: {"wall_s": 20.0 + s, "forward_tokens": 1000 * (s + 1)})
    return tmp_path, {"cold_start": base, "grpo": grpo}


def test_t_interval_by_hand():
    # mean 0.8, sd 0.1, n 3: half width t(0.975, 2) * 0.1 / sqrt(3) = 4.303 * 0.057735 = 0.248434
    out = t_interval([0.7, 0.8, 0.9])
    assert math.isclose(out["mean"], 0.8) and math.isclose(out["sd"], 0.1)
    assert math.isclose(out["ci_high"] - out["mean"], 4.303 * 0.1 / math.sqrt(3))
    assert t_interval([0.5])["ci_low"] is None and t_interval([])["mean"] is None


def test_paired_deltas_and_seed_counts(runs):
    _, methods = runs
    table = multiseed(methods, "cold_start")
    assert table["seeds"] == ["seed-0", "seed-1", "seed-2"]
    rows = {(r["benchmark"], r["metric"]): r for r in table["rows"]}
    acc = rows[("pope", "accuracy")]["paired"]["grpo"]
    # deltas .05 .10 .05: mean .0667, sd .028868, half 4.303 * .028868 / sqrt 3 = .071717 -> interval holds 0
    assert acc["deltas"] == pytest.approx([0.05, 0.10, 0.05]) and acc["better_in"] == 3
    assert acc["mean"] == pytest.approx(0.2 / 3) and acc["ci_low"] == pytest.approx(0.2 / 3 - 0.0717167, abs=1e-6)
    chair = rows[("chair", "chair_i")]
    assert chair["lower_is_better"] and chair["paired"]["grpo"]["better_in"] == 3
    # deltas -.05 -.04 -.06: sd .01, half .024843 -> [-.0748, -.0252], excludes 0
    assert chair["paired"]["grpo"]["ci_high"] == pytest.approx(-0.05 + 4.303 * 0.01 / math.sqrt(3))
    assert table["cost"]["grpo"]["training"] == {"forward_tokens": 2000.0, "wall_s": 21.0}
    assert set(table["per_seed_tables"]) == {"seed-0", "seed-1", "seed-2"}


def test_readme_verdicts_follow_the_intervals(runs):
    from prefopt.demo.readme import reading, verdict

    _, methods = runs
    table = multiseed(methods, "cold_start")
    rows = {r["metric"]: r for r in table["rows"]}
    assert verdict(rows["accuracy"]["paired"]["grpo"], False) == "unclear"
    assert verdict(rows["chair_i"]["paired"]["grpo"], True) == "better"
    assert verdict({"mean": -0.1, "ci_low": -0.2, "ci_high": -0.05}, False) == "worse"
    text = reading(table)
    assert "better on CHAIRi" in text and "no change beyond the across-seed interval on POPE accuracy" in text
    assert "learned the yes/no task (POPE accuracy ≥ 0.6) in 3 of 3 seeds" in text


def test_unequal_runs_refused(runs):
    _, methods = runs
    with pytest.raises(PrefoptError, match="same number of runs"):
        multiseed({"cold_start": methods["cold_start"], "grpo": methods["grpo"][:2]})


def test_compare_with_methods_and_globs(runs, capsys):
    root, _ = runs
    out = root / "report"
    argv = ["compare", "--method", f"cold={root}/seed-*/eval/cold_start",
            "--method", f"grpo={root}/seed-0/eval/grpo,{root}/seed-[12]/eval/grpo", "--baseline", "cold", "--out", str(out)]
    assert main(argv) == 0
    table = json.loads((out / "comparison.json").read_text())
    assert table["methods"] == ["cold", "grpo"] and len(table["runs"]["grpo"]) == 3
    for name in ("comparison.md", "comparison.png", "cost_vs_metric.png"):
        assert (out / name).stat().st_size > 100
    md = (out / "comparison.md").read_text()
    assert "Δ grpo − cold (paired)" in md and "### seed-2" in md and "train forward_tokens" in md


@pytest.mark.parametrize("spec", ["grpo", "=a", "grpo="])
def test_bad_method_spec_is_one_line(spec, tmp_path, capsys):
    assert main(["compare", "--method", spec, "--out", str(tmp_path)]) != 0
    assert "NAME=DIR" in capsys.readouterr().err


def test_run_cost_falls_back_to_the_model_folder(tmp_path):
    model, run = tmp_path / "model", tmp_path / "eval"
    model.mkdir()
    (model / "cost.json").write_text(json.dumps({"train": {"wall_s": 5.0, "forward_tokens": 7},
                                                  "reference_cache": {"wall_s": 1.0, "forward_tokens": 3}}))
    (run / "pope").mkdir(parents=True)
    (run / "pope" / "run_info.json").write_text(json.dumps({"model": str(model)}))
    (run / "pope" / "cost.json").write_text(json.dumps({"eval": {"wall_s": 2.0, "forward_tokens": 4}}))
    (run / "pope" / "metrics.json").write_text(json.dumps({"benchmark": "pope", "metrics": {"f1": iv(0.5)}}))
    assert run_cost(run) == {"training": {"wall_s": 6.0, "forward_tokens": 10}, "eval": {"wall_s": 2.0, "forward_tokens": 4}}


def test_seed_label(tmp_path):
    assert seed_label(tmp_path / "seed-12" / "eval" / "grpo", 0) == "seed-12"
    assert seed_label(tmp_path / "x", 3) == "#3"


def test_parse_seeds():
    from prefopt.demo.seeds import parse_seeds

    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("3") == [3]
    for bad in ("", "a,b", "1,1"):
        with pytest.raises(PrefoptError, match="--seeds"):
            parse_seeds(bad)


def test_demo_refuses_bad_seeds_in_one_line(tmp_path, capsys):
    assert main(["demo", "--seeds", "0,x", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "--seeds" in err and "Traceback" not in err


def test_run_seeds_layout_and_provenance(tmp_path, monkeypatch):
    """run_seeds: one demo per seed in OUT/seed-N, then the across-seed report with provenance (demo faked)."""
    import prefopt.demo.seeds as seeds_mod

    calls = []

    def fake_demo(out, quick, family, seed, fresh, log):
        calls.append((out.name, quick, seed))
        for method, per in (("cold_start", BASE), ("grpo", GRPO), ("symmpo", BASE)):
            for bench, metric in (("pope", "accuracy"), ("chair", "chair_i")):
                folder = out / "eval" / method / bench
                folder.mkdir(parents=True, exist_ok=True)
                data = {"benchmark": bench, "n": 10, "metrics": {metric: iv(per[metric][seed])}}
                (folder / "metrics.json").write_text(json.dumps(data))

    monkeypatch.setattr(seeds_mod, "run_demo", fake_demo)
    table = seeds_mod.run_seeds(tmp_path, [0, 2], quick=True, log=lambda s: None)
    assert calls == [("seed-0", True, 0), ("seed-2", True, 2)]
    assert table["seeds"] == ["seed-0", "seed-2"] and table["provenance"]["seeds"] == [0, 2]
    assert table["provenance"]["command"] == "prefopt demo --quick --seeds 0,2" and table["provenance"]["profile"] == "quick"
    stored = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert stored["provenance"]["budget"].startswith("equal optimizer updates")
