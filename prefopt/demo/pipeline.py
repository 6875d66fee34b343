"""Run the demo's stages through the real subcommands, each stage skipped when its output is complete.

Layout under ``OUT``::

    data/        the shapes world (make-data)           model/     the tiny random-init base (tiny-model)
    recipes/     the YAML of every training stage        runs/      sft, select, grpo, symmpo
    eval/        cold_start, grpo, symmpo: pope/ chair/  report/    comparison.md / .json / .png
    summary.md   what the run shows, with the table

A stage writes ``.demo-done`` into its folder when it finishes; a re-run with the same ``OUT`` skips it,
so an interrupted demo continues where it stopped (``fresh=True`` redoes everything).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from prefopt.cli import main
from prefopt.cost import Meter, record_section
from prefopt.demo.costs import write_method_costs
from prefopt.demo.judge import start_judge
from prefopt.demo.profiles import DemoProfile, profile
from prefopt.demo.summary import write_summary
from prefopt.errors import PrefoptError
from prefopt.eval.report import compare_runs
from prefopt.models.tiny import DEFAULT_FAMILY

DONE = ".demo-done"
METHODS = ("cold_start", "grpo", "symmpo")


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, the comparison table and how long each stage took."""

    out: Path
    report: Path
    table: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def cli(argv: Sequence[str], stage: str) -> None:
    """Run ``prefopt ARGV`` in this process; a non-zero exit becomes a PrefoptError naming the stage."""
    # every stage runs on the demo's thread count (a stage's own automatic choice could differ)
    argv = ["--threads", str(torch.get_num_threads()), *(str(a) for a in argv)]
    code = main(argv)
    if code != 0:
        raise PrefoptError(f"demo stage '{stage}' failed (exit {code}): prefopt {' '.join(argv)}")


def write_recipe(path: Path, recipe: dict[str, Any], command: str, note: str) -> Path:
    """Write a stage recipe whose first line is the exact command that runs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# {command}\n# {note}\n"
    path.write_text(header + yaml.safe_dump(recipe, sort_keys=False))
    return path


class Demo:
    """The stages of one demo run (see the module docstring for the layout)."""

    def __init__(self, out: str | Path, prof: DemoProfile, family: str, seed: int, fresh: bool, log: Callable):
        self.out = Path(out).resolve()
        self.prof = prof
        self.family = family
        self.seed = seed
        self.fresh = fresh
        self.log = log
        self.timings: dict[str, float] = {}
        self.data = self.out / "data"
        self.base = self.out / "model"
        self.runs = self.out / "runs"
        self.recipes = self.out / "recipes"
        self.judge: Any = None  # the local judge server while it runs (its request count is a cost)

    def stage(self, index: int, total: int, name: str, folder: Path, fn: Callable[[], None]) -> None:
        """Run ``fn`` unless ``folder`` holds a finished marker; time it and mark it done."""
        label = f"[{index}/{total}] {name}"
        if (folder / DONE).exists() and not self.fresh:
            self.log(f"{label}: done earlier, kept ({folder})")
            return
        if folder.exists():
            shutil.rmtree(folder)  # a half-finished stage is redone from scratch
        self.log(f"{label} ...")
        start = time.perf_counter()
        meter, calls = Meter(), self.judge_requests()
        fn()
        self.timings[name] = time.perf_counter() - start
        folder.mkdir(parents=True, exist_ok=True)
        record_section(folder, "stage", meter.read(judge_calls=self.judge_requests() - calls))
        (folder / DONE).write_text(json.dumps({"seconds": round(self.timings[name], 1)}))
        self.log(f"{label}: {self.timings[name]:.0f} s")

    def judge_requests(self) -> int:
        """Requests the local judge has answered so far (0 when it is not running)."""
        return int(getattr(self.judge, "requests", 0) or 0)

    # -- stages ---------------------------------------------------------------------------------------
    def make_data(self) -> None:
        """The shapes world."""
        w = self.prof.world
        cli(["make-data", "--out", self.data, "--seed", self.seed, "--train", w["train"], "--grpo", w["grpo"],
             "--preference", w["preference"], "--eval", w["eval"], "--noise", w["noise"]], "make-data")

    def tiny_model(self) -> None:
        """The random-init base checkpoint."""
        sizes = [f"--{k.replace('_', '-')}={v}" for k, v in self.prof.model.items()]
        cli(["tiny-model", "--family", self.family, "--out", self.base, "--seed", self.seed, *sizes], "tiny-model")

    def sft(self) -> None:
        """Cold start: captions and four-stage yes/no answers, 30 % of them hallucinating."""
        recipe = _merge(self.prof.sft, {
            "model": {"name_or_path": str(self.base)},
            "data": {"path": str(self.data / "sft.json"), "image_root": str(self.data)},
            "training": {"output_dir": str(self.runs / "sft")},
        })
        path = self.recipes / "sft.yaml"
        write_recipe(path, recipe, f"prefopt sft --config {path}", "stage 3 of prefopt demo: the cold start")
        cli(["sft", "--config", path], "sft")

    def grpo_recipe(self, judge_url: str, data_path: Path) -> dict[str, Any]:
        """The GRPO recipe from the cold-start checkpoint, judged by the local server at ``judge_url``."""
        return _merge(self.prof.grpo, {
            "model": {"name_or_path": str(self.runs / "sft")},
            "data": {"path": str(data_path), "image_root": str(self.data)},
            "rewards": {"judge": {"base_url": judge_url, "cache_dir": str(self.runs / "judge_cache")}},
            "training": {"output_dir": str(self.runs / "grpo")},
        })

    def select(self, judge_url: str) -> None:
        """Variance-guided selection of the GRPO prompts with the cold-start policy."""
        path = self.recipes / "select.yaml"
        k, keep = self.prof.select["k"], self.prof.select["keep"]
        command = f"prefopt select --config {path} --k {k} --keep {keep} --out {self.runs / 'select'}"
        write_recipe(path, self.grpo_recipe(judge_url, self.data / "grpo.json"), command,
                     "stage 4 of prefopt demo (the judge URL is the demo's local server, live only during the demo)")
        cli(["select", "--config", path, "--k", k, "--keep", keep, "--out", self.runs / "select"], "select")

    def grpo(self, judge_url: str) -> None:
        """GRPO on the selected prompts: accuracy, format and caption rewards, NTK term."""
        path = self.recipes / "grpo.yaml"
        recipe = self.grpo_recipe(judge_url, self.runs / "select" / "selected.json")
        write_recipe(path, recipe, f"prefopt grpo --config {path}",
                     "stage 5 of prefopt demo (the judge URL is the demo's local server, live only during the demo)")
        cli(["grpo", "--config", path], "grpo")

    def symmpo(self) -> None:
        """SymMPO on the preference pairs, from the same cold-start checkpoint."""
        recipe = _merge(self.prof.symmpo, {
            "model": {"name_or_path": str(self.runs / "sft")},
            "data": {"path": str(self.data / "symmpo.parquet"), "image_root": str(self.data)},
            "reference_cache_dir": str(self.runs / "symmpo_reference"),
            "training": {"output_dir": str(self.runs / "symmpo")},
        })
        path = self.recipes / "symmpo.yaml"
        write_recipe(path, recipe, f"prefopt symmpo --config {path}", "stage 6 of prefopt demo")
        cli(["symmpo", "--config", path], "symmpo")

    def evaluate(self, method: str) -> None:
        """POPE (four-stage prompt) and CHAIR (shapes vocabulary) on the held-out scenes."""
        model = self.runs / ("sft" if method == "cold_start" else method)
        ev = self.prof.eval
        common = ["--model", model, "--image-root", self.data, "--batch-size", ev["batch_size"],
                  "--bootstrap-rounds", ev["bootstrap_rounds"], "--seed", self.seed, "--device", "cpu"]
        target = self.out / "eval" / method
        cli(["eval", "pope", *common, "--data", self.data / "pope.jsonl", "--out", target / "pope",
             "--template", "four_stage", "--max-new-tokens", ev["max_new_tokens"]], f"eval {method} pope")
        cli(["eval", "chair", *common, "--data", self.data / "chair.jsonl", "--out", target / "chair",
             "--vocabulary", self.data / "world.json", "--max-new-tokens", 48], f"eval {method} chair")

    def compare(self) -> dict[str, Any]:
        """The comparison report against the cold start."""
        runs = [str(self.out / "eval" / m) for m in METHODS]
        return compare_runs(runs, str(self.out / "report"), baseline="cold_start", categories=False)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively with ``extra`` (neither is modified)."""
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def run_demo(
    out: str | Path = "outputs/demo",
    quick: bool = False,
    family: str = DEFAULT_FAMILY,
    seed: int = 0,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run every stage (skipping finished ones) and return the comparison; see the module docstring."""
    demo = Demo(out, profile("quick" if quick else "default"), family, seed, fresh, log)
    total = 7 + len(METHODS)
    demo.stage(1, total, "make-data", demo.data, demo.make_data)
    demo.stage(2, total, "tiny-model", demo.base, demo.tiny_model)
    demo.stage(3, total, "cold-start SFT", demo.runs / "sft", demo.sft)
    judge = demo.judge = start_judge(seed)
    try:
        demo.stage(4, total, "variance-guided selection", demo.runs / "select", lambda: demo.select(judge.base_url))
        demo.stage(5, total, "GRPO (caption reward + NTK)", demo.runs / "grpo", lambda: demo.grpo(judge.base_url))
    finally:
        judge.stop()
        demo.judge = None
    demo.stage(6, total, "SymMPO", demo.runs / "symmpo", demo.symmpo)
    for i, method in enumerate(METHODS):
        demo.stage(7 + i, total, f"eval {method}", demo.out / "eval" / method, lambda m=method: demo.evaluate(m))
    write_method_costs(demo.out)
    log(f"[{total}/{total}] compare ...")
    table = demo.compare()
    report = demo.out / "report" / "comparison.md"
    write_summary(demo.out, table, demo.prof, demo.timings)
    return DemoResult(demo.out, report, table, demo.timings)
