"""Run every benchmark (one invocation each, in turn) and print one table of all ratios at the end.

    python benchmarks/run_all.py            # full: 5 repeats, both families, the NTK 7B-head case
    python benchmarks/run_all.py --quick    # smoke run, about 3 minutes on 2 CPU cores
    python benchmarks/run_all.py --device cuda --dtype bfloat16 --config 3b --only grpo --only symmpo
    python benchmarks/run_all.py --config real-vocab    # real vocabularies / heads, 2 layers (issue 21)
    python benchmarks/run_all.py --repeats 3 --ntk-tokens 512 --ntk-tokens 2048 --ntk-tokens 6144 --ntk-vocab 32768

The raw results (every ``RESULT`` line) are written to ``--out`` (default
``benchmarks/results/<full|quick>.json``); ``docs/benchmarks.md`` is written from a full run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import CONFIGS, parse_result  # noqa: E402

#: target name -> benchmark module
SCRIPTS = {
    "grpo": "grpo_step",
    "ntk": "ntk_kernel",
    "symmpo": "symmpo_throughput",
    "resample": "resample_bench",
    "select": "select_bench",
    "ntk-train": "ntk_training_path",
    "vocab-memory": "vocab_memory",
    "vision": "vision_share",
}
#: targets whose model sizes are fixed by the script (the 7B head; the vocabulary resize) or family-free
_NO_CONFIG = ("ntk-train", "vocab-memory")


def script_args(args: argparse.Namespace, name: str) -> list[str]:
    """Command-line options forwarded to one benchmark script."""
    out = ["--device", args.device, "--dtype", args.dtype]
    if name not in _NO_CONFIG:
        out += ["--config", args.config]
    if args.quick:
        out += ["--quick", "--repeats", str(args.repeats or 1)]
    elif args.repeats:
        out += ["--repeats", str(args.repeats)]
    for family in args.family or []:
        if name not in _NO_CONFIG:
            out += ["--family", family]
    if name == "ntk" and args.quick:
        out += ["--case", "tiny", "--case", "sweep"]
    if name == "ntk-train" and args.quick:
        # a smoke row: the 7B head (the full run's default) takes minutes per row on a CPU
        out += ["--tokens", "256", "--d", "1024", "--vocab", "32768"]
    elif name == "ntk-train":
        for n in args.ntk_tokens or []:
            out += ["--tokens", str(n)]
        if args.ntk_vocab:
            out += ["--vocab", str(args.ntk_vocab)]
    return out


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Run one script in its own process, echo its ratio lines, return its RESULT dict."""
    cmd = [sys.executable, "-m", f"benchmarks.{SCRIPTS[name]}", *script_args(args, name)]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return {"target": name, "error": f"exit {proc.returncode}", "ratios": []}
    result = parse_result(proc.stdout)
    result["wall_s"] = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith("ratio ") or line.startswith("sweep "):
            print("   " + line, flush=True)
    return result


def table(results: list[dict]) -> str:
    """All ratios, one row each, with the goal and whether it is met (goals written '<= x' / '>= x')."""
    rows = [f"{'ratio':<64} {'value':>8}  goal"]
    for result in results:
        if "error" in result:
            rows.append(f"{result['target'] + ': FAILED (' + result['error'] + ')':<64}")
        for r in result["ratios"]:
            rows.append(f"{r['name']:<64} {r['value']:>8.3f}  {r['goal']}{verdict(r['value'], r['goal'])}")
    return "\n".join(rows)


def verdict(value: float, goal: str) -> str:
    """``  ok`` / ``  MISSED`` for numeric goals, nothing for report-only rows."""
    parts = goal.split()
    if len(parts) < 2 or parts[0] not in ("<=", ">=", "<", ">"):
        return ""
    limit = float(parts[1])
    ok = {"<=": value <= limit, ">=": value >= limit, "<": value < limit, ">": value > limit}[parts[0]]
    return "  ok" if ok else "  MISSED"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print the final table of ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--config", default="tiny", choices=CONFIGS,
                   help="tiny, 3b (GPU), or real-vocab / real-vocab-7b (real vocabulary and head, 2 layers)")
    p.add_argument("--family", action="append", choices=("qwen2_5_vl", "llava"))
    p.add_argument("--only", action="append", choices=sorted(SCRIPTS), help="run only these targets")
    p.add_argument("--out", default=None, help="JSON file for the raw results")
    p.add_argument("--ntk-tokens", type=int, action="append",
                   help="ntk-train: completion tokens per row (repeatable; default 256...8192)")
    p.add_argument("--ntk-vocab", type=int, default=None,
                   help="ntk-train: vocabulary of the head (default 152,064; the extra/head ratio is ~2N/3d, "
                        "independent of V, so a smaller V measures the same ratio in less CPU time)")
    args = p.parse_args(argv)
    names = args.only or list(SCRIPTS)
    results = [run_one(name, args) for name in names]
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{'quick' if args.quick else 'full'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nresults: {out}\n")
    print(table(results))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
