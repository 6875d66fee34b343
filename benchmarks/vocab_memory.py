"""Peak memory of a 3-step ``prefopt symmpo --loss dpo`` run at the tiny and at the real (152,064) vocabulary.

The tiny Qwen2.5-VL is built once; a copy has its embedding and LM head resized to 152,064 rows (Qwen2.5-VL's
vocabulary, everything else unchanged). Each run is a fresh ``python -m prefopt.cli symmpo`` process under
``/usr/bin/time -v``, and its "Maximum resident set size" is the number reported: in-process deltas would
hide what the interpreter, torch and the model cost. The goal (issue 21): the real vocabulary adds at most
600 MiB over the tiny one. ``--prefopt-root`` points the runs at another checkout (e.g. the code before
a change) to record the "before" number with the same script.

    python benchmarks/vocab_memory.py [--quick] [--prefopt-root /work/main]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

REAL_VOCAB = 152_064
GOAL_MIB = 600.0


def resized_copy(src: str, out: Path, vocab: int) -> str:
    """``src`` with its input embedding and LM head resized to ``vocab`` rows (built once, cached)."""
    if (out / "config.json").is_file():
        return str(out)
    from prefopt.models.adapter import load_adapter

    adapter = load_adapter(src, dtype="float32")
    adapter.model.resize_token_embeddings(vocab, mean_resizing=False)
    adapter.model.save_pretrained(out)
    adapter.processor.save_pretrained(out)
    return str(out)


def shapes_world(out: Path) -> Path:
    """A small shapes world (the SymMPO parquet and its images), written once."""
    if not (out / "symmpo.parquet").is_file():
        from prefopt.cli import main

        assert main(["make-data", "--out", str(out), "--train", "2", "--grpo", "2", "--preference", "12",
                     "--eval", "2"]) == 0
    return out


def run_dpo(model: str, data: Path, out: Path, steps: int, root: Path, batch: int) -> dict[str, float]:
    """One fresh-process ``symmpo --loss dpo`` run: max RSS (MiB) and wall seconds."""
    shutil.rmtree(out, ignore_errors=True)  # a left-over checkpoint would be resumed: no training, no peak
    argv = ["/usr/bin/time", "-v", sys.executable, "-m", "prefopt.cli", "symmpo",
            "--config", str(common.ROOT / "recipes" / "tiny" / "qwen_symmpo.yaml"), "--loss", "dpo",
            f"model.name_or_path={model}", f"data.path={data / 'symmpo.parquet'}", f"data.image_root={data}",
            f"training.output_dir={out}", f"training.max_steps={steps}", "training.save_steps=1000",
            f"training.per_device_train_batch_size={batch}", f"reference_batch_size={batch}",
            f"reference_cache_dir={out / 'ref-cache'}", "contrastive=none"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(root))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({model}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"maxrss_mib": kib / 1024.0, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="examples per step (DPO: 2 sequences each)")
    p.add_argument("--prefopt-root", default=str(common.ROOT), help="checkout whose prefopt the runs import")
    args = p.parse_args(argv)
    n = 1 if args.quick else common.repeats(args)
    cache = common.CACHE / "vocab_memory"
    tiny = common.model_dir("qwen2_5_vl", args)
    real = resized_copy(tiny, cache / f"tiny-qwen-v{REAL_VOCAB}", REAL_VOCAB)
    data = shapes_world(cache / "shapes")
    root = Path(args.prefopt_root).resolve()
    rows: dict[str, list[dict[str, float]]] = {"tiny": [], "real": []}
    for i in range(n):  # interleaved tiny / real, each a fresh process
        for name, model in (("tiny", tiny), ("real", real)):
            rows[name].append(run_dpo(model, data, cache / f"run-{name}-{i}", args.steps, root, args.batch))
    stats = {name: {k: common.summary([r[k] for r in runs]) for k in ("maxrss_mib", "seconds")}
             for name, runs in rows.items()}
    added = stats["real"]["maxrss_mib"]["median"] - stats["tiny"]["maxrss_mib"]["median"]
    result = {"prefopt_root": str(root), "steps": args.steps, "batch": args.batch, "vocab": REAL_VOCAB, "repeats": n, **stats,
              "added_mib": added, "load_avg": common.load_avg()}
    for name in ("tiny", "real"):
        print(f"{name:5s} peak {common.fmt_stats(stats[name]['maxrss_mib'], ' MiB')}  "
              f"time {common.fmt_stats(stats[name]['seconds'])}")
    common.emit("vocab_memory", result, [("real-vocab added peak MiB", added, f"<= {GOAL_MIB:.0f}")])


if __name__ == "__main__":
    main()
