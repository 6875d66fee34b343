"""GRPO prompt data: Video-R1 / GWYS JSON records -> the Hugging Face dataset TRL's GRPOTrainer reads.

Each row holds ``prompt`` (a conversational user turn built by ``prefopt.grpo.prompts.build_prompt`` with one
image placeholder per image), ``images`` (decoded lazily by ``datasets.Image``), and the columns the reward
functions read: ``solution``, ``problem_type``, ``problem``, ``options``, ``data_type`` and ``id``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefopt.errors import DataError

READERS = ("video_r1",)


def read_prompt_examples(path: str | Path, fmt: str = "video_r1", image_root: str | None = None) -> list[Any]:
    """Read ``PromptExample`` records through the reader of ``fmt``."""
    if fmt not in READERS:
        raise DataError(f"unknown data.format {fmt!r}; choose one of {list(READERS)}", path=str(path))
    if not Path(path).is_file():
        raise DataError("data file not found", path=str(path))
    from prefopt.data.formats import read_video_r1

    return list(read_video_r1(path, image_root=image_root))


def example_row(example: Any, template: str) -> dict[str, Any]:
    """One dataset row (prompt messages, media and reward columns) for a ``PromptExample``."""
    from prefopt.data.schema import user_message
    from prefopt.grpo.prompts import build_prompt

    if example.videos:
        raise DataError(
            "video prompts are not supported by `prefopt grpo` yet (TRL's GRPO loss forward drops video tensors); "
            f"example {example.id!r} has a video",
        )
    text = build_prompt(example.problem, example.problem_type, list(example.options), template)
    return {
        "id": str(example.id),
        "prompt": [user_message(text, n_images=len(example.images))],
        "images": [_image_value(img) for img in example.images],
        "problem": example.problem,
        "options": [str(o) for o in example.options],
        "solution": example.solution or "",
        "problem_type": example.problem_type or "free-form",
        "data_type": example.data_type or "image",
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
            "problem": datasets.Value("string"),
            "options": datasets.List(datasets.Value("string")),
            "solution": datasets.Value("string"),
            "problem_type": datasets.Value("string"),
            "data_type": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def load_dataset_for_recipe(data: Any) -> Any:
    """The training dataset described by a recipe's ``data:`` section."""
    if not data.path:
        raise DataError("data.path is empty: give a Video-R1 / GWYS JSON file")
    examples = read_prompt_examples(data.path, data.format, data.image_root)
    return build_dataset(examples, data.template, data.max_samples)


def write_examples_json(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write raw Video-R1 style rows as a JSON list (used by ``prefopt select`` to save the kept subset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
