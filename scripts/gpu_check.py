#!/usr/bin/env python3
"""One command that checks and times prefopt on real-size models (GPU) or on the tiny ones (CPU), same code path.

    python scripts/gpu_check.py --device cuda --config real     # Qwen2.5-VL-3B full FT + LLaVA-1.5-7B LoRA, bf16
    python scripts/gpu_check.py --device cpu --config tiny      # the same checks on prefopt's tiny models, fp32

Every check catches its own exception (the traceback goes into the JSON) and the run goes on; the exit code
is 1 when any check failed or was skipped for time. Results: ``--out``/gpu_check.json (default ``$OUT`` when
set, else outputs/gpu_check), and a short table printed last. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)
for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                   ("TOKENIZERS_PARALLELISM", "false"), ("WANDB_DISABLED", "true")):
    os.environ.setdefault(key, value)

from gpucheck import dpo_checks, grpo_checks, micro_checks, models  # noqa: E402
from gpucheck.context import SIZES, Context  # noqa: E402

#: (name, function), most important first: when the time budget runs out the rest is skipped.
CHECKS = [
    ("sft", grpo_checks.sft),
    ("gwys_grpo", grpo_checks.gwys_grpo),
    ("trl_grpo", grpo_checks.trl_grpo),
    ("ntk_cost", micro_checks.ntk_cost),
    ("symmpo", dpo_checks.symmpo),
    ("dpo", dpo_checks.dpo),
    ("trl_dpo", dpo_checks.trl_dpo),
    ("reverse_sft", grpo_checks.reverse_sft),
    ("resample", micro_checks.resample),
    ("grounded_grpo", grpo_checks.grounded_grpo),
    ("merge_lora", dpo_checks.merge_and_generate),
]


def environment(device: str) -> dict[str, Any]:
    """Machine, library versions and the peak FLOP/s used for MFU."""
    import accelerate
    import peft
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__,
           "accelerate": accelerate.__version__, "cpu_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "machine": platform.machine()}
    for name in ("trl", "datasets", "numpy", "pandas", "pyarrow"):
        env[name] = _version(name)
    if device.startswith("cuda"):
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    env["torchvision"] = _version("torchvision")
    env["matplotlib"] = _version("matplotlib")
    if env["matplotlib"].startswith("missing"):
        # The bare GPU machine has no matplotlib: the trainers' loss-curve PNG is skipped, nothing else changes.
        import prefopt.training.common as common

        common.plot_training_curves = lambda *args, **kwargs: None
        env["matplotlib"] += "; training curves not plotted"
    env["peak_flops"], env["peak_source"] = models.peak_flops(device)
    return env


def _version(name: str) -> str:
    try:
        return __import__(name).__version__
    except ImportError as err:
        return f"missing ({err})"


def prepare(ctx: Context) -> dict[str, Any]:
    """Build both checkpoints and the synthetic data; return their shapes."""
    from prefopt.data.synthetic import WorldSizes, write_world

    figures: dict[str, Any] = {}
    for family in ("qwen2_5_vl", "llava"):
        start = time.perf_counter()
        out = models.build_checkpoint(family, ctx.size, ctx.work / "models" / family, ctx.device)
        ctx.models[family] = out
        ctx.shapes[family] = models.model_shape(family, out, ctx.size)
        figures[family] = {**ctx.shapes[family], "build_s": time.perf_counter() - start,
                           "model": models.NAMES[family] if ctx.size == "real" else f"tiny {family}"}
    s = ctx.sizes
    ctx.world = write_world(ctx.work / "world", WorldSizes(
        train=2 * s["sft_batch"] * s["steps"], grpo=4 * s["steps"], preference=s["pref_batch"] * s["steps"] + 2,
        eval=2, grounded=4 * s["steps"], size=s["image"]))
    return figures


def run_check(name: str, fn: Any, ctx: Context, deadline: float) -> dict[str, Any]:
    """Run one check; any exception becomes ``status: failed`` with its traceback."""
    if time.monotonic() > deadline:
        return {"status": "skipped", "reason": "time budget spent"}
    start = time.perf_counter()
    print(f"== {name} ...", flush=True)
    try:
        figures = fn(ctx)
        result = {"status": "passed", "figures": figures}
    except Exception as err:  # noqa: BLE001 - every failure is recorded and the run continues
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        print(result["traceback"], file=sys.stderr, flush=True)
    result["wall_s"] = time.perf_counter() - start
    print(f"== {name}: {result['status']} ({result['wall_s']:.1f} s)", flush=True)
    return result


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def table(report: dict[str, Any]) -> str:
    """The short text table printed last: one row per check, its main figure."""
    rows = [f"gpu_check {report['config']} on {report['device']} "
            f"({report['env'].get('gpu') or report['env']['machine']}), torch {report['env']['torch']}, "
            f"transformers {report['env']['transformers']}, trl {report['env'].get('trl')}",
            f"{'check':<14} {'status':<8} {'wall s':>7}  main figures"]
    for name, res in report["checks"].items():
        f = res.get("figures") or {}
        main = ""
        if "step_s" in f:
            main = f"step {_fmt(f['step_s'])} s"
        if f.get("tokens_per_s"):
            main += f", {_fmt(f['tokens_per_s'])} tok/s/dev"
        if "examples_per_s" in f:
            main += f", {_fmt(f['examples_per_s'])} ex/s"
        if "mfu" in f:
            main += f", MFU {'n/a' if f['mfu'] is None else format(100 * f['mfu'], '.1f') + ' %'}"
        for key in ("prefopt_over_trl_step_time", "symmpo_over_trl_examples_per_s", "dpo_over_trl_examples_per_s",
                    "ntk_over_lm_head", "retrospective_over_generate"):
            if key in f:
                main += f", {key} {_fmt(f[key])}"
        if res["status"] == "failed":
            main = res["error"][:90]
        rows.append(f"{name:<14} {res['status']:<8} {res.get('wall_s', 0):>7.1f}  {main.lstrip(', ')}")
    rows.append(f"total {report['wall_s']:.0f} s; failed {report['failed']}, skipped {report['skipped']}")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--config", default="real", choices=sorted(SIZES), help="real sizes or prefopt's tiny models")
    p.add_argument("--out", default=os.environ.get("OUT") or "outputs/gpu_check", help="folder of gpu_check.json")
    p.add_argument("--work", default=None, help="scratch folder for checkpoints (default: a temp folder, removed)")
    p.add_argument("--budget-s", type=float, default=360.0, help="skip the remaining checks after this many seconds")
    p.add_argument("--only", action="append", choices=[n for n, _ in CHECKS], help="run only these checks")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    return p.parse_args(argv)


def write_report(report: dict[str, Any], out: Path, start: float) -> None:
    """Write gpu_check.json (after every check, so a run killed for time still leaves its figures)."""
    report["wall_s"] = time.perf_counter() - start
    statuses = [c["status"] for c in report["checks"].values()]
    report["failed"], report["skipped"] = statuses.count("failed"), statuses.count("skipped")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no GPU; use --device cpu --config tiny", file=sys.stderr)
        return 2
    start = time.perf_counter()
    deadline = time.monotonic() + args.budget_s
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    ctx = Context(device=args.device, size=args.config, work=work, sizes=SIZES[args.config])
    report: dict[str, Any] = {"config": args.config, "device": args.device, "env": environment(args.device),
                              "sizes": ctx.sizes, "flop_formula": models.FLOP_FORMULA, "checks": {}}
    out = Path(args.out)
    report["checks"]["prepare"] = run_check("prepare", prepare, ctx, float("inf"))
    write_report(report, out, start)
    for name, fn in CHECKS:
        if args.only and name not in args.only:
            continue
        if report["checks"]["prepare"]["status"] != "passed":
            report["checks"][name] = {"status": "skipped", "reason": "prepare failed"}
            continue
        report["checks"][name] = run_check(name, fn, ctx, deadline)
        write_report(report, out, start)
    write_report(report, out, start)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(table(report), flush=True)
    return 1 if report["failed"] or report["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
