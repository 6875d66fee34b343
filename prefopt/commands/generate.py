"""Batch inference over a dataset, optionally with REVERSE retrospective resampling, writing JSONL.

Input: LLaVA conversation JSON (the first user turn is the question), Video-R1 / GWYS JSON (``problem``,
``options``, ``path``), or a simple JSONL with ``question``, ``image`` (optional, relative to --image-root or
the data file's folder) and ``id``. Output: one JSON line per example with ``id``, ``question`` and ``text``
(the answer the evaluation harness reads); with --reverse also ``raw`` (tagged), ``flagged``, ``attempts``
and ``success``. Runs are resumable: ids already in --out are skipped.

  prefopt generate --model runs/llava-reverse --data pope.jsonl --out results.jsonl --reverse --tau 0.003
  prefopt generate --model Qwen/Qwen2.5-VL-3B-Instruct --data chair.jsonl --out plain.jsonl --batch-size 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefopt.errors import DataError
from prefopt.models.registry import families

NAME = "generate"
HELP = "answer a dataset with a model (optionally REVERSE retrospective resampling) into resumable JSONL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--data", required=True, help="LLaVA JSON, Video-R1 JSON, or JSONL with question/image/id")
    parser.add_argument("--out", required=True, help="output JSONL (appended to; ids already there are skipped)")
    parser.add_argument("--image-root", default=None, help="folder the media paths are relative to (default: the data file's)")
    parser.add_argument(
        "--family", default=None, choices=families(), help="model family (detected from config.json when omitted)"
    )
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--limit", type=int, default=None, help="answer at most this many examples")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="T0 (0 = greedy)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=4, help="batch size without --reverse")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video-frames", type=int, default=8, help="frames sampled per video")
    parser.add_argument("--overlong", choices=("refuse", "truncate"), default="refuse",
                        help="prompts longer than the model's positions minus --max-new-tokens: refuse (stop, "
                             "naming the row; default) or truncate (skip them, counted)")
    rev = parser.add_argument_group("REVERSE retrospective resampling")
    rev.add_argument("--reverse", action="store_true", help="verify phrases and resample flagged ones")
    rev.add_argument("--tau", type=float, default=0.003, help="flag when p(</UN>) > tau [0.003; 0.5 yes/no; 0.01 Qwen]")
    rev.add_argument("--delta-t", type=float, default=0.1, help="temperature step per rejection")
    rev.add_argument("--local-retries", type=int, default=10, help="K: failures before a sentence backtrack")
    rev.add_argument("--max-attempts", type=int, default=50, help="N: rejections before giving up")
    rev.add_argument("--no-hint", action="store_true", help="do not write flagged phrases into the prompt")
    rev.add_argument("--fallback", choices=("prefix", "last", "text"), default="prefix", help="answer on give-up")
    rev.add_argument("--fallback-text", default="I cannot answer this question confidently.")


def _simple_rows(rows: Any, data_path: Path, image_root: str | None) -> list[dict[str, Any]]:
    from prefopt.data.images import resolve_media_path
    from prefopt.data.schema import user_message

    root = image_root
    items = []
    for i, row in enumerate(rows):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError("field 'question' must be a non-empty string", path=str(data_path), row=i + 1)
        image = row.get("image")
        images = [resolve_media_path(image, root)] if image else []
        row_id = row.get("id")
        items.append({"id": str(i if row_id is None else row_id), "question": question,
                      "messages": [user_message(question, len(images))], "images": images, "videos": []})
    return items


def _record_item(record: Any) -> dict[str, Any]:
    from prefopt.data.schema import message_text

    messages = list(record.messages)
    first_answer = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    prompt = messages[:first_answer]
    users = [m for m in prompt if m.get("role") == "user"]
    question = message_text(users[-1]) if users else ""
    return {"id": str(record.id), "question": question, "messages": prompt, "images": list(record.images),
            "videos": list(record.videos)}


def load_items(data: str, image_root: str | None = None) -> list[dict[str, Any]]:
    """Prompts of a dataset as ``{id, question, messages, images, videos}`` dicts."""
    from prefopt.data.formats import guess_format, read_dataset
    from prefopt.data.loaders import load_rows

    path = Path(data)
    if image_root is None and path.is_file():
        image_root = str(path.parent)
    rows = load_rows(data)
    fmt = guess_format(rows.columns)
    if fmt in ("llava", "video_r1", "viscot"):
        items = [_record_item(r) for r in read_dataset(data, fmt, image_root)]
    elif "question" in rows.columns:
        items = _simple_rows(rows, path, image_root)
    else:
        raise DataError(f"cannot tell the layout from fields {rows.columns}: expected LLaVA 'conversations', "
                        "Video-R1 'problem', or 'question' (+ 'image', 'id')", path=data)
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item["id"] in seen:
            raise DataError(f"id {item['id']!r} appears twice (resuming needs unique ids)", path=data, row=i + 1)
        seen.add(item["id"])
    return items


def done_ids(out: Path) -> set[str]:
    """Ids already answered in ``out`` (a cut-off last line is ignored and rewritten)."""
    if not out.is_file():
        return set()
    ids = set()
    for line in out.read_text().splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def _drop_partial_line(out: Path) -> None:
    """Cut a last line that a killed run left unfinished, so that appended lines stay valid JSONL."""
    if not out.is_file():
        return
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        out.write_bytes(data[: data.rfind(b"\n") + 1])


def _media(item: dict[str, Any], frames: int) -> tuple[list[Any], list[Any]]:
    from prefopt.data.images import load_image
    from prefopt.data.video import load_video_frames

    images = [load_image(src) for src in item["images"]]
    videos = [load_video_frames(v, num_frames=frames) if isinstance(v, str) else v for v in item["videos"]]
    return images, videos


def _plain_batch(adapter: Any, items: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from prefopt.reverse.resample import strip_tags

    media = [_media(it, args.video_frames) for it in items]
    videos = [m[1] for m in media] if any(m[1] for m in media) else None
    batch = adapter.encode_prompts([it["messages"] for it in items], [m[0] for m in media], videos)
    batch = batch.to(next(adapter.model.parameters()).device)
    sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} if args.temperature > 0 \
        else {"do_sample": False}
    with torch.no_grad():
        out = adapter.model.generate(**batch, max_new_tokens=args.max_new_tokens, **sampling)
    texts = adapter.decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return [{"id": it["id"], "question": it["question"], "text": strip_tags(t)} for it, t in zip(items, texts)]


def _reverse_one(sampler: Any, item: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    images, videos = _media(item, args.video_frames)
    res = sampler(item["messages"], images, videos)
    return {"id": item["id"], "question": item["question"], "text": res.text, "raw": res.raw,
            "flagged": res.flagged, "attempts": res.attempts, "success": res.success}


def _sampler(adapter: Any, args: argparse.Namespace) -> Any:
    from prefopt.reverse.resample import ResampleConfig, RetrospectiveSampler

    cfg = ResampleConfig(
        tau=args.tau, temperature=args.temperature, temperature_step=args.delta_t, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, local_retries=args.local_retries, max_attempts=args.max_attempts,
        hint=not args.no_hint, fallback=args.fallback, fallback_text=args.fallback_text, seed=args.seed,
    )
    return RetrospectiveSampler(adapter, cfg)


def _check_lengths(adapter: Any, todo: list[dict[str, Any]], items: list[dict[str, Any]],
                   args: argparse.Namespace) -> list[dict[str, Any]]:
    """``todo`` without the prompts too long for the model (``--overlong truncate``), or stop at the first."""
    from prefopt.data.bad_rows import BadRows
    from prefopt.data.lengths import length_check, max_positions_of

    check = length_check(adapter.tokenizer, max_positions_of(adapter.model.config), args.max_new_tokens,
                         args.overlong, option="--overlong")
    if check is None:
        return todo
    tracker = BadRows(args.data, max_fraction=0.999, key="--overlong")
    position = {id(it): i for i, it in enumerate(items)}
    tracker.total, tracker.rows = len(items), [position[id(it)] for it in todo]
    kept = tracker.screen(todo, check)
    if tracker.count:
        import logging

        logging.getLogger(__name__).warning("%s: %d over-long prompts skipped: %s", args.data, tracker.count,
                                            tracker.grouped())
    return kept


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from prefopt.models.adapter import load_adapter

    out = Path(args.out)
    items = load_items(args.data, args.image_root)[: args.limit]
    done = done_ids(out)
    todo = [it for it in items if it["id"] not in done]
    print(f"{len(items)} examples, {len(items) - len(todo)} already in {out}, {len(todo)} to answer")
    if not todo:
        return 0
    torch.manual_seed(args.seed)
    adapter = load_adapter(args.model, family=args.family, dtype=args.dtype)
    adapter.model.eval()
    todo = _check_lengths(adapter, todo, items, args)
    sampler = _sampler(adapter, args) if args.reverse else None
    out.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_line(out)
    step = 1 if args.reverse else max(1, args.batch_size)
    with out.open("a") as fh, tqdm(total=len(todo), desc="generate", unit="ex") as bar:
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            rows = [_reverse_one(sampler, chunk[0], args)] if args.reverse else _plain_batch(adapter, chunk, args)
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()  # a killed run loses at most the example in flight
            bar.update(len(chunk))
    print(f"wrote {out}")
    return 0
