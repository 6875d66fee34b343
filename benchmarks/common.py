"""Shared helpers of the benchmark scripts: timing, peak memory, tiny models, result lines.

Every script times prefopt and its baseline in ONE process, interleaved A B A B so that load from
other processes on the (shared) machine hits both alike, and reports the median and min–max of the
repeats. Peak memory on the CPU is read from the kernel: ``/proc/self/clear_refs`` (write ``5``)
resets the process's resident-set high-water mark (``VmHWM``) to its current size, so the peak of one
measured call is ``VmHWM`` after it minus the resident size before it. tracemalloc cannot see torch's
allocations; ``ru_maxrss`` never goes down within a process, hence the reset (``isolated_peak`` runs a
command in a fresh subprocess instead, for the cases that must run alone). On CUDA the peak comes from
``torch.cuda.max_memory_allocated``.

Each script ends with a ``RESULT {json}`` line (read by ``run_all.py``) followed by its ratio lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("PREFOPT_BENCH_CACHE", ROOT / "outputs" / "bench"))
FAMILIES = ("qwen2_5_vl", "llava")
#: Qwen2.5-VL-3B sizes (text and vision towers) for ``--config 3b``; the vocabulary stays the tiny BPE one.
QWEN_3B = dict(
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    vision_hidden_size=1280,
    vision_intermediate_size=3420,
    vision_depth=32,
    vision_heads=16,
    max_position_embeddings=32768,
)

#: "real-vocab" configs: the real vocabulary, hidden size, attention heads and MLP width of each family's
#: released model, with only 2 language layers and the tiny vision tower (what the LM head costs is real).
REAL_VOCAB = {
    "real-vocab": {  # Qwen2.5-VL-3B head / LLaVA-1.5-7B head
        "qwen2_5_vl": dict(hidden_size=2048, intermediate_size=11008, num_attention_heads=16, num_key_value_heads=2,
                           vocab=151_936),
        "llava": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                      vocab=32_064),
    },
    "real-vocab-7b": {  # Qwen2.5-VL-7B head
        "qwen2_5_vl": dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                           vocab=152_064),
        "llava": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                      vocab=32_064),
    },
}
CONFIGS = ("tiny", "3b", *REAL_VOCAB)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smallest sizes and fewest steps (smoke run)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default 5, quick 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument(
        "--config",
        default="tiny",
        choices=CONFIGS,
        help="tiny random-init models, a random-init Qwen2.5-VL-3B (GPU only), or real-vocab(-7b): the real "
        "vocabulary / hidden size / head of each family with 2 layers",
    )
    p.add_argument("--family", action="append", choices=FAMILIES, help="model family (default: both)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on a shared machine, spinning OpenMP workers make timings erratic)",
    )
    p.add_argument(
        "--model-dir",
        action="append",
        default=[],
        help="FAMILY=DIR of an existing tiny checkpoint (skips building one)",
    )
    return p


def repeats(args: argparse.Namespace) -> int:
    """Timed repeats per side: ``--repeats`` or the mode's default (also applies ``--threads``)."""
    if args.device == "cpu" and args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    return args.repeats if args.repeats is not None else (2 if args.quick else 5)


def families(args: argparse.Namespace) -> list[str]:
    """The model families to run (``--config 3b`` is Qwen2.5-VL only)."""
    if args.config == "3b":
        return ["qwen2_5_vl"]
    return list(args.family or FAMILIES)


def model_dir(family: str, args: argparse.Namespace) -> str:
    """A checkpoint of ``family``: ``--model-dir`` if given, else built once under the benchmark cache."""
    for spec in args.model_dir:
        name, _, path = spec.partition("=")
        if name == family:
            return path
    from prefopt.models.tiny import build_tiny

    sizes = QWEN_3B if args.config == "3b" else dict(REAL_VOCAB.get(args.config, {}).get(family, {}))
    vocab = sizes.pop("vocab", None)
    out = CACHE / f"{args.config}-{family}"
    if not (out / "config.json").is_file():
        build_tiny(family, out, seed=0, **sizes)
        if vocab:
            resize_vocabulary(out, vocab)
    return str(out)


def resize_vocabulary(path: Path, vocab: int) -> None:
    """Resize the checkpoint's embedding and LM head to ``vocab`` rows in place (the tokenizer keeps its ids)."""
    from prefopt.models.adapter import load_adapter

    adapter = load_adapter(str(path), dtype="float32")
    adapter.model.resize_token_embeddings(vocab, mean_resizing=False)
    adapter.model.save_pretrained(path)


def torch_dtype(args: argparse.Namespace) -> Any:
    """The torch dtype named by ``--dtype``."""
    import torch

    return getattr(torch, args.dtype)


def load_avg() -> float:
    """One-minute load average (the machine is shared; it goes next to every timing)."""
    return os.getloadavg()[0]


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of a list of measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def interleave(sides: dict[str, Callable[[], float]], n: int, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Run each side ``warmup`` times untimed, then ``n`` rounds A B A B …; each call returns seconds."""
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    loads = []
    for _ in range(n):
        for name, fn in sides.items():
            times[name].append(fn())
        loads.append(load_avg())
    out = {name: summary(v) for name, v in times.items()}
    out["load"] = summary(loads)
    return out


def timed(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Wall-clock seconds of ``fn()`` (CUDA synchronised)."""
    sync = _sync(device)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def _sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


@contextlib.contextmanager
def peak_memory(device: str = "cpu") -> Iterator[dict[str, float]]:
    """Measure the peak memory (MiB) a block adds above what the process held when it started.

    CPU: resets the kernel's resident high-water mark, then reads ``VmHWM - VmRSS(before)``.
    CUDA: ``max_memory_allocated - memory_allocated(before)``.
    """
    result: dict[str, float] = {}
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result["peak_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        return
    import gc

    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    yield result
    result["peak_mib"] = (_status_kib("VmHWM") - before) / 1024


def measure_peak(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Peak MiB added by one call of ``fn``."""
    with peak_memory(device) as mem:
        fn()
    return mem["peak_mib"]


def isolated(module: str, argv: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m benchmarks.<module> argv`` in a fresh process; return its ``RESULT`` dict.

    The child reports its own ``ru_maxrss`` (a fresh process's maxrss is that measurement's alone).
    """
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *argv]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return parse_result(proc.stdout)


def maxrss_mib() -> float:
    """This process's lifetime peak resident size in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment() -> dict[str, Any]:
    """Machine and library versions for the results table."""
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def emit(target: str, result: dict[str, Any], ratios: list[tuple[str, float, str]]) -> None:
    """Print the ``RESULT`` json line, then one line per ratio (the ratios come last)."""
    payload = {
        "target": target,
        "env": environment(),
        **result,
        "ratios": [{"name": n, "value": v, "goal": g} for n, v, g in ratios],
    }
    print("RESULT " + json.dumps(payload, default=float), flush=True)
    for name, value, goal in ratios:
        print(f"ratio {name}: {value:.3f}  (goal {goal})", flush=True)


def parse_result(stdout: str) -> dict[str, Any]:
    """The dict of the last ``RESULT`` line of a script's output."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"no RESULT line in output:\n{stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def family_ratios(
    target: str, runs: list[dict[str, Any]], metrics: list[tuple[str, str, str]], baseline: str = "TRL"
) -> list[tuple[str, float, str]]:
    """Per family: ``prefopt / trl`` median of each ``(result key, label, goal)``, then the peak-memory ratio."""
    ratios = []
    for r in runs:
        for key, label, goal in metrics:
            m = r[key]
            ratios.append(
                (f"{target} {r['family']}: {label}", m["prefopt"]["median"] / m["trl"]["median"], goal)
            )
        if r["peak_mib"]:
            peak = mem_ratio(r["peak_mib"]["prefopt"], r["peak_mib"]["trl"])
            ratios.append((f"{target} {r['family']}: prefopt / {baseline} peak memory", peak, "report"))
    return ratios


def mem_ratio(a: float, b: float) -> float:
    """Peak-memory ratio with the baseline floored at 1 MiB (sub-MiB peaks are page-granularity noise)."""
    return max(a, 0.0) / max(b, 1.0)


def fmt_stats(s: dict[str, float], unit: str = "s", scale: float = 1.0) -> str:
    """``median (min–max) unit`` for a summary dict."""
    return f"{s['median'] * scale:.4g} ({s['min'] * scale:.4g}–{s['max'] * scale:.4g}) {unit}"
