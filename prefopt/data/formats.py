"""Readers for the public dataset layouts prefopt trains and evaluates on.

Each reader loads a file (JSON, JSONL, parquet) or a hub dataset through ``datasets``, validates every
row and returns records from :mod:`prefopt.data.schema`. A bad row raises :class:`DataError` naming the
file, the row (1-based: the first data row is row 1) and the field (inside
:func:`prefopt.data.bad_rows.tolerate` it is recorded and skipped instead); every image a row names is checked to
exist under ``image_root`` but is not decoded (records keep resolved paths or raw bytes; decode with
:func:`prefopt.data.images.load_image`).

Layouts:

- ``video_r1``: Video-R1 / Ground-What-You-See RL prompts (``problem``, ``options``, ``solution``,
  ``problem_type``, ``data_type``, ``path``) -> :class:`PromptExample`; ``video_r1_sft``: the same
  layout as cold-start conversations answered by ``process_and_answer`` -> :class:`ConversationExample`;
- ``llava``: LLaVA-Instruct / LLaVA-CoT conversations (``id``, ``image``, ``conversations``)
  -> :class:`ConversationExample`;
- ``viscot``: Ground-R1's VisCoT JSONL (``image``, ``width``, ``height``, ``bboxs``, ``dataset``,
  ``problem``, ``solution``, ``problem_id``) -> :class:`PromptExample`;
- ``symmpo``: SymMPO parquet (``question``, ``resp_1_w``, ``resp_1_l``, ``resp_2_w``, ``image_1``,
  ``image_2``, ``idx``) -> :class:`PreferenceExample`;
- ``preference``: TRL / RLAIF-V preference data (``question`` or ``prompt``, ``chosen``, ``rejected``,
  ``image`` or ``images``) -> :class:`PreferenceExample`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import partial
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from prefopt.data.images import resolve_media_path
from prefopt.data.loaders import Rows, load_rows
from prefopt.data.schema import (
    PROBLEM_TYPES,
    ConversationExample,
    PreferenceExample,
    PromptExample,
    assistant_message,
    message_text,
    user_message,
)
from prefopt.errors import DataError, ImageError

Root = str | os.PathLike | None
_PLACEHOLDER = re.compile(r"(<image>|<video>)")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class _Row:
    """One raw row plus where it came from, so that every check can name file, row and field."""

    def __init__(self, data: dict[str, Any], source: str, index: int, root: Root):
        self.data, self.source, self.index, self.root = data, source, index, root

    def error(self, message: str) -> DataError:
        return DataError(message, path=self.source, row=self.index + 1)

    def get(self, key: str, types: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        """Field ``key`` checked against ``types``; missing (absent or null) is an error if ``required``."""
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(f"missing field {key!r} (fields present: {sorted(self.data)})")
            return default
        if not isinstance(value, types):
            names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise self.error(f"field {key!r} must be {names}, got {type(value).__name__}")
        return value

    def text(self, key: str, required: bool = True) -> str | None:
        return self.get(key, str, required=required)

    def first_present(self, *keys: str) -> str:
        """The first of ``keys`` the row holds (for layouts with alternative field names)."""
        for key in keys:
            if self.data.get(key) is not None:
                return key
        raise self.error(f"missing field {' or '.join(repr(k) for k in keys)} (fields present: {sorted(self.data)})")

    def media(self, value: Any, key: str, kind: str = "image") -> str | bytes | Image.Image:
        """A media reference as a checked path string or raw bytes (``{"bytes","path"}`` dicts unwrapped)."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            if not value:
                raise self.error(f"field {key!r}: empty image bytes")
            return bytes(value)
        if isinstance(value, Image.Image):  # a hub dataset whose images were decoded upstream
            return value
        if not isinstance(value, str) or not value:
            raise self.error(f"field {key!r}: expected a {kind} path or bytes, got {type(value).__name__}")
        try:
            resolved = resolve_media_path(value, self.root)
        except ImageError as exc:
            raise ImageError(f"field {key!r}: {exc}", path=self.source, row=self.index + 1) from exc
        if not os.path.isfile(resolved):
            where = f" under image root {os.fspath(self.root)!r}" if self.root is not None else ""
            raise ImageError(f"field {key!r}: {kind} file not found: {resolved}{where}",
                             path=self.source, row=self.index + 1)
        return resolved

    def media_list(self, key: str, kind: str = "image", required: bool = False) -> list:
        """A field holding one media reference or a list of them."""
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(f"missing field {key!r} (fields present: {sorted(self.data)})")
            return []
        values = value if isinstance(value, list) else [value]
        return [self.media(v, key, kind) for v in values]

    def extra(self, used: set[str]) -> dict[str, Any]:
        """The fields no record attribute holds, kept for downstream use (e.g. ``process``)."""
        return {k: v for k, v in self.data.items() if k not in used and v is not None}

    def id(self, *keys: str) -> str:
        for key in keys:
            if self.data.get(key) is not None:
                return str(self.data[key])
        return str(self.index)


def _parse(rows: Rows, parse_row: Callable[[_Row], Any], root: Root, desc: str) -> list:
    """Apply ``parse_row`` to every row, with a progress bar on big files (bad rows skipped when tolerated)."""
    from prefopt.data import bad_rows

    tracker = bad_rows.active()
    out, kept = [], []
    show = len(rows) >= 5000
    for i, data in enumerate(tqdm(rows, total=len(rows), desc=desc, disable=not show)):
        try:
            if not isinstance(data, dict):
                raise DataError(f"expected an object, got {type(data).__name__}", path=rows.source, row=i + 1)
            out.append(parse_row(_Row(data, rows.source, i, root)))
        except DataError as err:
            if tracker is None:
                raise
            tracker.record(i, err)
            continue
        kept.append(i)
    if tracker is not None:
        tracker.parsed(len(rows), kept)
    return out


# ---- Video-R1 / GWYS -------------------------------------------------------------------------------
def render_problem(problem: str, options: list[str]) -> str:
    """The question text: ``problem + "Options:\\n" + one option per line`` (SPEC 1.1) when there are options."""
    if not options:
        return problem
    return problem + "Options:\n" + "\n".join(options)


def _problem_type(row: _Row, default: str | None = None) -> str:
    value = row.get("problem_type", str, default=default, required=default is None)
    if value not in PROBLEM_TYPES:
        raise row.error(f"field 'problem_type' is {value!r}; expected one of {list(PROBLEM_TYPES)}")
    return value


def _options(row: _Row) -> list[str]:
    options = row.get("options", list, default=[])
    if not all(isinstance(o, str) for o in options):
        raise row.error("field 'options' must be a list of strings")
    return list(options)


def _video_r1_row(row: _Row) -> PromptExample:
    problem = row.text("problem")
    solution = row.text("solution")
    problem_type = _problem_type(row)
    options = _options(row)
    has_path = row.data.get("path") is not None
    data_type = row.get("data_type", str, default="image" if has_path else "text")
    if data_type not in ("image", "video", "text"):
        raise row.error(f"field 'data_type' is {data_type!r}; expected 'image', 'video' or 'text'")
    images, videos = [], []
    if data_type == "image":
        images = row.media_list("path", "image", required=True)
    elif data_type == "video":
        videos = row.media_list("path", "video", required=True)
    text = render_problem(problem, options)
    used = {"problem", "solution", "problem_type", "options", "data_type", "path"}
    return PromptExample(
        id=row.id("problem_id", "id"), messages=[user_message(text, len(images), len(videos))],
        problem=problem, solution=solution, problem_type=problem_type, data_type=data_type,
        options=options, images=images, videos=videos, extra=row.extra(used))


def read_video_r1(path: str | os.PathLike, image_root: Root = None, split: str = "train") -> list[PromptExample]:
    """Video-R1 / GWYS prompts (SPEC 1.8) as :class:`PromptExample` records."""
    return _parse(load_rows(path, split), _video_r1_row, image_root, "video_r1")


def _video_r1_sft_row(row: _Row, answer_field: str = "process_and_answer") -> ConversationExample:
    """A Video-R1-layout row as an SFT conversation: the prompt turn, then ``answer_field`` as the answer."""
    prompt = _video_r1_row(row)
    answer = row.text(answer_field)
    extra = {k: v for k, v in prompt.extra.items() if k != answer_field}
    extra.update(problem=prompt.problem, solution=prompt.solution, problem_type=prompt.problem_type)
    return ConversationExample(id=prompt.id, messages=prompt.messages + [assistant_message(answer)],
                               images=prompt.images, videos=prompt.videos, extra=extra)


def read_video_r1_sft(path: str | os.PathLike, image_root: Root = None, answer_field: str = "process_and_answer",
                      split: str = "train") -> list[ConversationExample]:
    """Video-R1-layout cold-start data (SPEC 1.7): the prompt, answered by ``answer_field``."""
    return _parse(load_rows(path, split), partial(_video_r1_sft_row, answer_field=answer_field), image_root,
                  "video_r1_sft")


# ---- LLaVA conversations ---------------------------------------------------------------------------
def _turn_content(value: str) -> list[dict[str, Any]]:
    """A human turn's text split on ``<image>``/``<video>`` into ordered media and text parts."""
    parts: list[dict[str, Any]] = []
    for piece in _PLACEHOLDER.split(value):
        if piece in ("<image>", "<video>"):
            parts.append({"type": piece[1:-1]})
        elif piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
    return parts


def _llava_turns(row: _Row) -> list[tuple[str, str]]:
    turns = row.get("conversations", list, required=True)
    out = []
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in _ROLES or not isinstance(turn.get("value"), str):
            raise row.error(f"conversations[{t}] must be {{'from': human|gpt|system, 'value': str}}, got {turn!r:.120}")
        out.append((_ROLES[turn["from"]], turn["value"]))
    roles = [r for r, _ in out if r != "system"]
    if not roles or roles[0] != "user" or "assistant" not in roles:
        raise row.error("conversations must start with a human turn and hold at least one gpt turn")
    if any(a == b for a, b in zip(roles, roles[1:])):
        raise row.error("conversations must alternate human and gpt turns")
    return out


def _check_placeholders(row: _Row, messages: list[dict], kind: str, count: int) -> None:
    """Placeholders must match the media; none at all means the media go before the first question."""
    found = sum(1 for m in messages for p in m["content"] if p["type"] == kind)
    if found == 0 and count:
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"][:0] = [{"type": kind} for _ in range(count)]
    elif found != count:
        raise row.error(f"{found} <{kind}> placeholder(s) in the conversation but {count} {kind}(s) listed")


def _llava_row(row: _Row) -> ConversationExample:
    images = row.media_list("image", "image")
    videos = row.media_list("video", "video")
    messages = []
    for role, value in _llava_turns(row):
        if role == "user":
            content = _turn_content(value)
        else:
            content = [{"type": "text", "text": value.strip() if role == "system" else value}]
        messages.append({"role": role, "content": content})
    _check_placeholders(row, messages, "image", len(images))
    _check_placeholders(row, messages, "video", len(videos))
    return ConversationExample(id=row.id("id"), messages=messages, images=images, videos=videos,
                               extra=row.extra({"id", "image", "video", "conversations"}))


def read_llava_conversations(path: str | os.PathLike, image_root: Root = None,
                             split: str = "train") -> list[ConversationExample]:
    """LLaVA-Instruct / LLaVA-CoT conversations (multi-turn, one or more images) as records."""
    return _parse(load_rows(path, split), _llava_row, image_root, "llava")


# ---- VisCoT (Ground-R1) ----------------------------------------------------------------------------
def _boxes(row: _Row, width: int, height: int) -> list[list[float]]:
    boxes = row.get("bboxs", list, required=True)
    for b, box in enumerate(boxes):
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise row.error(f"bboxs[{b}] must be [x1, y1, x2, y2] numbers, got {box!r:.80}")
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            raise row.error(f"bboxs[{b}] = {box} needs x2 > x1 and y2 > y1")
        if min(x1, y1) < 0 or x2 > width or y2 > height:
            raise row.error(f"bboxs[{b}] = {box} lies outside the {width}x{height} image")
    return [[float(v) for v in box] for box in boxes]


def _viscot_row(row: _Row) -> PromptExample:
    images = row.media_list("image", "image", required=True)
    problem = row.text("problem")
    width = int(row.get("width", (int, float), required=True))
    height = int(row.get("height", (int, float), required=True))
    extra = {
        "width": width,
        "height": height,
        "bboxs": _boxes(row, width, height),
        "dataset": row.text("dataset"),
        "problem_id": row.id("problem_id", "id"),
    }
    used = {"image", "problem", "solution", "problem_type", "width", "height", "bboxs", "dataset", "problem_id"}
    extra.update(row.extra(used))
    return PromptExample(
        id=extra["problem_id"], messages=[user_message(problem, len(images))], problem=problem,
        solution=row.text("solution"), problem_type=_problem_type(row, default="free-form"),
        data_type="image", images=images, extra=extra)


def read_viscot_jsonl(path: str | os.PathLike, image_root: Root = None, split: str = "train") -> list[PromptExample]:
    """Ground-R1 VisCoT prompts with ``width``/``height``/``bboxs``/``dataset``/``problem_id`` in ``extra``."""
    return _parse(load_rows(path, split), _viscot_row, image_root, "viscot")


# ---- preference data -------------------------------------------------------------------------------
def _symmpo_row(row: _Row) -> PreferenceExample:
    return PreferenceExample(
        id=row.id("idx", "id"), question=row.text("question"),
        image=row.media(row.get("image_1", (str, bytes, dict), required=True), "image_1"),
        chosen=row.text("resp_1_w"), rejected=row.text("resp_1_l"),
        contrastive_image=row.media(row.get("image_2", (str, bytes, dict), required=True), "image_2"),
        contrastive_chosen=row.text("resp_2_w"),
        extra=row.extra({"idx", "question", "image_1", "image_2", "resp_1_w", "resp_1_l", "resp_2_w"}))


def read_symmpo_parquet(path: str | os.PathLike, image_root: Root = None,
                        split: str = "train") -> list[PreferenceExample]:
    """SymMPO symmetric preference rows (SPEC 3) as :class:`PreferenceExample` records."""
    return _parse(load_rows(path, split), _symmpo_row, image_root, "symmpo")


def _turn_text(row: _Row, key: str, role: str) -> str:
    """A plain string field, or the text of the last ``role`` message of a conversational field (TRL)."""
    value = row.get(key, (str, list), required=True)
    if isinstance(value, str):
        return value
    turns = [m for m in value if isinstance(m, dict) and m.get("role") == role]
    if not turns:
        raise row.error(f"field {key!r} holds no {role} message")
    return message_text(turns[-1])


def _preference_row(row: _Row) -> PreferenceExample:
    key = row.first_present("question", "prompt")
    # The adapter inserts the image itself; a LLaVA-style "<image>\n" in the text would double it.
    question = _PLACEHOLDER.sub("", _turn_text(row, key, "user")).strip()
    image_key = row.first_present("image", "images")
    images = row.media_list(image_key, "image")
    if len(images) != 1:
        raise row.error(f"field {image_key!r} must hold exactly one image, got {len(images)}")
    used = {key, image_key, "chosen", "rejected", "idx", "id"}
    return PreferenceExample(
        id=row.id("idx", "id"), question=question, image=images[0],
        chosen=_turn_text(row, "chosen", "assistant"), rejected=_turn_text(row, "rejected", "assistant"),
        extra=row.extra(used))


def read_preference_dataset(path_or_name: str | os.PathLike, image_root: Root = None,
                            split: str = "train") -> list[PreferenceExample]:
    """TRL / RLAIF-V preference rows (a file or a hub dataset name) as :class:`PreferenceExample` records."""
    return _parse(load_rows(path_or_name, split), _preference_row, image_root, "preference")


# ---- dispatch --------------------------------------------------------------------------------------
FORMATS: dict[str, Callable[[_Row], Any]] = {
    "video_r1": _video_r1_row,
    "video_r1_sft": _video_r1_sft_row,
    "llava": _llava_row,
    "viscot": _viscot_row,
    "symmpo": _symmpo_row,
    "preference": _preference_row,
}
ALIASES = {"gwys": "video_r1", "video-r1": "video_r1", "llava_cot": "llava", "llava-cot": "llava",
           "conversations": "llava", "ground_r1": "viscot", "ground-r1": "viscot", "rlaif_v": "preference",
           "rlaif-v": "preference", "dpo": "preference"}
# Checked in order: the first layout whose marker fields the data holds wins. ``video_r1_sft`` is only
# chosen by name: an RL prompt file may carry the cold-start answer too.
_MARKERS = (("symmpo", {"resp_1_w", "resp_1_l"}), ("llava", {"conversations"}), ("viscot", {"bboxs"}),
            ("video_r1", {"problem"}), ("preference", {"chosen", "rejected"}))


def guess_format(columns: list[str]) -> str | None:
    """The layout whose marker fields appear among ``columns``, or None."""
    present = set(columns)
    return next((name for name, marker in _MARKERS if marker <= present), None)


def read_dataset(path: str | os.PathLike, format: str | None = None, image_root: Root = None,
                 split: str = "train") -> list:
    """Read any supported layout; ``format`` by name (see :data:`FORMATS`) or guessed from the fields."""
    if format is not None:
        key = ALIASES.get(format.lower(), format.lower())
        if key not in FORMATS:
            raise DataError(f"unknown dataset format {format!r}; known: {sorted(FORMATS) + sorted(ALIASES)}")
    rows = load_rows(path, split)
    if format is None:
        key = guess_format(rows.columns)
        if key is None:
            raise DataError(f"cannot tell the dataset format from its fields {rows.columns}; pass format= one of "
                            f"{sorted(FORMATS)}", path=rows.source)
    return _parse(rows, FORMATS[key], image_root, key)
