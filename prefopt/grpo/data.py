"""GRPO prompt data: Video-R1 / GWYS JSON records -> the Hugging Face dataset TRL's GRPOTrainer reads.

Each row holds ``prompt`` (a conversational user turn built by ``prefopt.grpo.prompts.build_prompt`` with one
placeholder per image or video), ``images`` (decoded lazily by ``datasets.Image``), ``videos`` (paths; frames are
sampled per generation batch by :func:`attach_videos`), and the columns the reward
functions read: ``solution``, ``problem_type``, ``problem``, ``options``, ``data_type`` and ``id``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefopt.errors import DataError

READERS = ("video_r1", "viscot")


def read_prompt_examples(path: str | Path, fmt: str = "video_r1", image_root: str | None = None) -> list[Any]:
    """Read ``PromptExample`` records through the reader of ``fmt``."""
    if fmt not in READERS:
        raise DataError(f"unknown data.format {fmt!r}; choose one of {list(READERS)}", path=str(path))
    if not Path(path).is_file():
        raise DataError("data file not found", path=str(path))
    from prefopt.data.formats import read_video_r1, read_viscot_jsonl

    reader = read_viscot_jsonl if fmt == "viscot" else read_video_r1
    return list(reader(path, image_root=image_root))


def example_row(example: Any, template: str) -> dict[str, Any]:
    """One dataset row (prompt messages, media and reward columns) for a ``PromptExample``."""
    from prefopt.data.schema import user_message
    from prefopt.grpo.prompts import build_prompt

    if template == "grounded":
        from prefopt.grpo.grounded import grounded_prompt

        if len(example.images) != 1 or example.videos:
            raise DataError(
                f"prompt {example.id}: the grounded template needs exactly one image and no video"
            )
        text = grounded_prompt(example.problem, example.problem_type, list(example.options))
    else:
        text = build_prompt(example.problem, example.problem_type, list(example.options), template)
    return {
        "id": str(example.id),
        "prompt": [user_message(text, n_images=len(example.images), n_videos=len(example.videos))],
        "images": [_image_value(img) for img in example.images],
        "videos": [str(v) for v in example.videos],
        "problem": example.problem,
        "options": [str(o) for o in example.options],
        "solution": example.solution or "",
        "problem_type": example.problem_type or "free-form",
        "data_type": example.data_type or "image",
        # annotated evidence boxes (VisCoT ``bboxs``), original-image pixels; the grounded rollout logs GIoU
        "bboxs": [[float(v) for v in box] for box in (example.extra or {}).get("bboxs", [])],
    }


def _image_value(src: Any) -> Any:
    """Paths stay paths (decoded lazily); bytes and PIL images are stored as they are."""
    return str(src) if isinstance(src, Path) else src


def build_dataset(examples: list[Any], template: str, max_samples: int | None = None) -> Any:
    """A ``datasets.Dataset`` of GRPO rows with lazily decoded images."""
    import datasets

    if max_samples is not None:
        examples = examples[:max_samples]
    if not examples:
        raise DataError("no prompts to train on (the data file is empty or max_samples is 0)")
    rows = [example_row(ex, template) for ex in examples]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "prompt": [
                {
                    "role": datasets.Value("string"),
                    "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}],
                }
            ],
            "images": datasets.List(datasets.Image()),
            "videos": datasets.List(datasets.Value("string")),
            "problem": datasets.Value("string"),
            "options": datasets.List(datasets.Value("string")),
            "solution": datasets.Value("string"),
            "problem_type": datasets.Value("string"),
            "data_type": datasets.Value("string"),
            "bboxs": datasets.List(datasets.List(datasets.Value("float32"))),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def load_dataset_for_recipe(data: Any) -> Any:
    """The training dataset described by a recipe's ``data:`` section."""
    return load_checked(data)[0]


def load_checked(data: Any, extra_check: Any = None) -> tuple[Any, Any]:
    """``(dataset, tracker)``: bad rows (missing fields, corrupt images, ...) skipped and counted in the
    ``BadRows`` tracker, whose ``rows`` map each dataset row to its 0-based source row; more than
    ``data.max_bad_fraction`` of bad rows stop with one line naming the file and the first rows."""
    from prefopt.data.bad_rows import BadRows, check_images, read_tolerant

    if not data.path:
        raise DataError("data.path is empty: give a Video-R1 / GWYS JSON file")
    tracker = BadRows(data.path, getattr(data, "max_bad_fraction", 0.01))
    examples = read_tolerant(tracker, lambda: read_prompt_examples(data.path, data.format, data.image_root))
    examples = tracker.truncate(examples, data.max_samples)

    def check(example: Any) -> None:
        check_images(example)
        example_row(example, data.template)  # e.g. the grounded template's one-image rule
        if extra_check is not None:
            extra_check(example)  # e.g. the prompt-length check (prefopt.data.lengths)

    examples = tracker.screen(examples, check)
    tracker.check()
    return build_dataset(examples, data.template), tracker


def attach_videos(rows: list[dict[str, Any]], load_frames: Any) -> list[dict[str, Any]]:
    """Copies of ``rows`` whose video placeholders carry sampled frames (TRL hands only images to the processor).

    ``load_frames(path)`` returns a list of PIL frames; rows without videos are returned unchanged.
    """
    out = []
    decoded: dict[str, Any] = {}  # GRPO repeats each prompt once per generation: decode each file once
    for row in rows:
        paths = list(row.get("videos") or [])
        if not paths:
            out.append(row)
            continue
        for path in paths:
            if path not in decoded:
                decoded[path] = load_frames(path)
        frames = iter([decoded[p] for p in paths])
        prompt = []
        for message in row["prompt"]:
            content = message["content"]
            if isinstance(content, list):
                content = [
                    {"type": "video", "video": next(frames)} if part.get("type") == "video" else part
                    for part in content
                ]
            prompt.append({**message, "content": content})
        out.append({**row, "prompt": prompt})
    return out


def video_inputs(adapter: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any] | None] | None:
    """Per-row video tensors (the adapter's ``video_input_keys``) exactly as the processor makes them.

    Rows that repeat the same prompt (GRPO's group copies) are processed once. None when no row has a video.
    """
    if not any(row.get("videos") for row in rows):
        return None
    cache: dict[tuple, dict[str, Any]] = {}
    result: list[dict[str, Any] | None] = []
    for row in rows:
        if not row.get("videos"):
            result.append(None)
            continue
        key = (row.get("id"), tuple(row["videos"]))
        if key not in cache:
            cache[key] = adapter.video_inputs(row["prompt"])
        result.append(cache[key])
    return result


def write_examples_json(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write raw Video-R1 style rows as a JSON list (used by ``prefopt select`` to save the kept subset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
