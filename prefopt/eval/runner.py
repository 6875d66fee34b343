"""Run a benchmark: batched greedy generation through a model adapter (resumable), then scoring.

Generation appends one JSON line per question to ``OUT/predictions.jsonl`` as it goes and flushes
it, so a killed run loses at most the batch in flight; a rerun reads the finished ids and only
generates the rest (a half-written last line is cut off first).  Scoring reads the predictions file
and writes ``OUT/metrics.json``; ``OUT/run_info.json`` records how the run was made.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import prefopt
from prefopt.cost import measured
from prefopt.data.images import load_image
from prefopt.data.paths import media_root
from prefopt.data.schema import user_message
from prefopt.errors import DataError, PrefoptError
from prefopt.eval.amber import Amber
from prefopt.eval.chair import Chair
from prefopt.eval.common import (
    Benchmark,
    EvalItem,
    EvalOptions,
    check_scoring,
    read_json,
    read_jsonl,
    read_records,
)
from prefopt.eval.hallusion import HallusionBench
from prefopt.eval.mcq import MultipleChoice
from prefopt.eval.mmhal import MMHal
from prefopt.eval.pope import Pope
from prefopt.eval.refcoco import RefCOCO
from prefopt.models.adapter import load_adapter

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
RUN_INFO = "run_info.json"


def benchmark_classes() -> dict[str, type[Benchmark]]:
    """``{name: class}`` of every benchmark."""
    classes = (Pope, Chair, Amber, MMHal, HallusionBench, MultipleChoice, RefCOCO)
    return {cls.name: cls for cls in classes}


def get_benchmark(name: str) -> Benchmark:
    """An instance of the benchmark called ``name``."""
    classes = benchmark_classes()
    if name not in classes:
        raise PrefoptError(f"unknown benchmark '{name}'; choose one of {sorted(classes)}")
    return classes[name]()


def finished_ids(pred_path: Path) -> set[str]:
    """Ids already in a predictions file; a truncated last line (killed mid-write) is removed from the file."""
    if not pred_path.is_file():
        return set()
    rows = read_jsonl(pred_path, allow_truncated_tail=True)
    text = pred_path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        parsed_last = bool(rows) and rows[-1][0] == text.count("\n") + 1
        pred_path.write_text(text + "\n" if parsed_last else text[: text.rfind("\n") + 1], encoding="utf-8")
    ids = set()
    for line, row in rows:
        if "id" not in row:
            raise DataError("prediction row without 'id'; cannot resume", path=str(pred_path), row=line)
        ids.add(str(row["id"]))
    return ids


def _check_unique(items: Sequence[EvalItem], data_path: str | Path) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DataError(f"duplicate question id '{item.id}'", path=str(data_path))
        seen.add(item.id)


def generate_predictions(
    bench: Benchmark,
    items: Sequence[EvalItem],
    model_dir: str,
    out_dir: Path,
    *,
    image_root: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    family: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
) -> dict[str, int]:
    """Generate greedy answers for the items not yet in ``out_dir/predictions.jsonl``; returns counts."""
    pred_path = out_dir / PREDICTIONS
    done = finished_ids(pred_path)
    todo = [it for it in items if it.id not in done]
    logger.info(
        "%s: %d questions, %d already answered, %d to go", bench.name, len(items), len(done), len(todo)
    )
    if todo:
        adapter = _load(model_dir, family, dtype, device)
        budget = max_new_tokens or bench.max_new_tokens
        with pred_path.open("a", encoding="utf-8") as fh:
            for batch, answers in _answer_batches(bench, adapter, todo, image_root, batch_size, budget):
                for item, answer in zip(batch, answers, strict=True):
                    row = {"id": item.id, **item.meta, "prompt": item.prompt, "text": answer}
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
    return {"n_items": len(items), "n_resumed": len(done & {it.id for it in items}), "n_generated": len(todo)}


def _load(model_dir: str, family: str | None, dtype: str = "auto", device: str | None = None) -> Any:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # on the CPU the default placement is right; a device_map puts the weights straight on the GPU
    device_map = None if device == "cpu" else device
    adapter = load_adapter(model_dir, family=family, dtype=dtype, device_map=device_map)
    adapter.model.eval()
    return adapter


def _answer_batches(
    bench: Benchmark,
    adapter: Any,
    items: Sequence[EvalItem],
    image_root: str | None,
    batch_size: int,
    budget: int,
):
    """Yield ``(batch, answers)``: left-padded prompts, greedy decoding, only the new tokens decoded."""
    import torch

    pad_id = adapter.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = adapter.tokenizer.eos_token_id
    progress = tqdm(total=len(items), desc="generating", unit="q")
    for start in range(0, len(items), max(1, batch_size)):
        batch = list(items[start : start + batch_size])
        conversations = [[user_message(it.prompt, n_images=len(it.images))] for it in batch]
        images = [[load_image(src, root=image_root) for src in it.images] for it in batch]
        for item, loaded in zip(batch, images, strict=True):
            bench.note_images(item, loaded)
        inputs = adapter.encode_prompts(conversations, images if any(images) else None)
        inputs = inputs.to(adapter.model.device)
        with torch.inference_mode():
            output = adapter.model.generate(
                **inputs, do_sample=False, max_new_tokens=budget, pad_token_id=pad_id
            )
        answers = [a.strip() for a in adapter.decode(output[:, inputs["input_ids"].shape[1] :])]
        progress.update(len(batch))
        yield batch, answers
    progress.close()


def score_predictions(
    bench: Benchmark, pred_path: str | Path | Sequence[str | Path], out_dir: Path, opts: EvalOptions
) -> dict:
    """Score one or more predictions files and write ``out_dir/metrics.json`` (see :func:`finish_scoring`)."""
    paths = [str(pred_path)] if isinstance(pred_path, str | Path) else [str(p) for p in pred_path]
    rows = bench.read_prediction_files(paths, opts)
    if not rows:
        raise DataError("no predictions to score", path=", ".join(paths))
    metrics = finish_scoring(bench, bench.score(rows, opts, out_dir), opts)
    metrics["bootstrap"] = {"rounds": opts.rounds, "seed": opts.seed, "confidence": 0.95}
    (out_dir / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return metrics


def finish_scoring(bench: Benchmark, metrics: dict, opts: EvalOptions) -> dict:
    """Make sure metrics.json says how it was scored, and warn loudly about answers nobody could read."""
    head = {k: metrics[k] for k in ("benchmark", "n") if k in metrics}
    head["scoring"] = metrics.get("scoring", opts.scoring)
    head["parse_disagreements"] = metrics.get("parse_disagreements")  # None: a single reading
    head["n_unparsed"] = metrics.get("n_unparsed", 0)
    metrics = {**head, **{k: v for k, v in metrics.items() if k not in head}}
    unparsed = metrics["n_unparsed"] or 0
    if unparsed:
        hint = " (no <answer>...</answer> tag in the four-stage answers)" if opts.template == "four_stage" else ""
        message = (
            f"{bench.name}: {unparsed} of {metrics.get('n', '?')} answers could not be parsed under "
            f"--scoring {metrics['scoring']}{hint}; they count as wrong"
        )
        metrics.setdefault("warnings", []).append(message)
        logger.warning(message)
        print(f"WARNING: {message}", file=sys.stderr)
    return metrics


def _copy_as_jsonl(sources: Sequence[Path], target: Path) -> None:
    """Keep the scored predictions beside the metrics, as JSONL whatever their original layout
    (several files are concatenated, each row tagged with its ``source_file``)."""
    if len(sources) == 1 and target.exists() and target.samefile(sources[0]):
        return
    rows = []
    for source in sources:
        tag = {"source_file": source.name} if len(sources) > 1 else {}
        rows += [{**row, **tag} for _, row in read_records(source)]
    with target.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def run_info(bench: Benchmark, opts: EvalOptions, **fields: Any) -> dict[str, Any]:
    """The resolved settings of a run (environment-variable names only, never secrets)."""
    options = {f.name: _jsonable(getattr(opts, f.name)) for f in dataclasses.fields(opts)}
    if isinstance(options.get("judge"), dict):
        options["judge"] = {k: v for k, v in options["judge"].items() if "key" not in k or k.endswith("_env")}
    return {
        "benchmark": bench.name,
        **fields,
        "options": options,
        "prefopt_version": getattr(prefopt, "__version__", None),
        "python": platform.python_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _claim(out: Path, bench: Benchmark, model: str) -> None:
    """Refuse to resume answers that another model (or benchmark) left in ``out``."""
    info_path, pred_path = out / RUN_INFO, out / PREDICTIONS
    if not (info_path.is_file() and pred_path.is_file() and pred_path.stat().st_size):
        return
    info = read_json(info_path)
    previous = (info.get("benchmark"), info.get("model"))
    if previous != (bench.name, model):
        raise PrefoptError(
            f"{out} already holds {previous[0]} answers from model {previous[1]}; "
            f"resuming them with {bench.name} / {model} would mix runs: choose another --out"
        )


def evaluate(
    bench_name: str,
    out_dir: str | Path,
    opts: EvalOptions,
    *,
    model: str | None = None,
    data: str | Sequence[str] | None = None,
    predictions: str | Sequence[str] | None = None,
    image_root: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    family: str | None = None,
    limit: int | None = None,
    dtype: str = "auto",
    device: str | None = None,
) -> dict:
    """Generate (when ``model`` is given) and score; returns the metrics.

    Score-only runs (``predictions``) may name several answer files, and ``data`` official question
    files that the benchmark joins them with (POPE: one per split).
    """
    bench = get_benchmark(bench_name)
    check_scoring(opts.scoring)
    if limit is not None and limit <= 0:
        raise PrefoptError(f"--limit must be a positive number of questions, got {limit}")
    data_list = [] if data is None else [data] if isinstance(data, str | Path) else [str(d) for d in data]
    pred_list = (
        [] if predictions is None else [predictions] if isinstance(predictions, str | Path) else list(predictions)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {
        "model": model,
        "family": family,
        "data": data,
        "image_root": image_root,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens or bench.max_new_tokens,
        "limit": limit,
        "dtype": dtype,
        "device": device,
    }
    if model is not None:
        if not data_list:
            raise PrefoptError("--model needs --data (the benchmark file)")
        if len(data_list) > 1:
            raise PrefoptError("--model takes one --data file: run one evaluation per split")
        data = data_list[0]
        fields["data"] = data
        items = bench.load_items(data, opts)[: limit or None]
        _check_unique(items, data)
        _claim(out, bench, model)
        # written before generating so that a killed run can be resumed (and checked) later
        _write_info(out, run_info(bench, opts, **fields, status="generating"))

        gen_kw = {
            "image_root": media_root(data, image_root),  # relative images: under --image-root, else the file's folder
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "dtype": dtype,
            "device": device,
        }

        with measured(out, "eval") as cost:
            fields.update(generate_predictions(bench, items, model, out, family=family, **gen_kw))
        fields["cost"] = cost
        pred_path = out / PREDICTIONS
    elif pred_list:
        opts = dataclasses.replace(opts, data=tuple(data_list))
        pred_path = pred_list if len(pred_list) > 1 else pred_list[0]
        _copy_as_jsonl([Path(p) for p in pred_list], out / PREDICTIONS)
        fields["data"] = data_list or None
    else:
        raise PrefoptError("give --model (with --data) to generate, or --predictions to score a file")
    metrics = score_predictions(bench, pred_path, out, opts)
    shown = [str(p) for p in pred_path] if isinstance(pred_path, list) else str(pred_path)
    _write_info(out, run_info(bench, opts, **fields, predictions=shown, status="done"))
    return metrics


def _write_info(out: Path, info: dict[str, Any]) -> None:
    (out / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
