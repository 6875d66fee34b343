"""Canonical records that every reader produces and every trainer consumes.

Messages use the Hugging Face chat layout: ``{"role": "user", "content": [{"type": "image"},
{"type": "text", "text": "..."}]}``. Images (and videos) are listed separately, in the order their
placeholders appear in the messages, as an :data:`ImageSource` that ``prefopt.data.images`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

#: A path (already resolved under the image root), raw encoded bytes, or a decoded PIL image.
ImageSource = str | bytes | Image.Image

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression", "yes/no", "math", "grounding")


@dataclass
class PromptExample:
    """One RL prompt: a user turn with media, and the solution the rewards compare against."""

    id: str
    messages: list[dict[str, Any]]
    problem: str
    solution: str | None = None
    problem_type: str | None = None
    data_type: str = "image"  # "image", "video" or "text"
    options: list[str] = field(default_factory=list)
    images: list[ImageSource] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. VisCoT width/height/bboxs


@dataclass
class ConversationExample:
    """One supervised conversation (LLaVA layout): user and assistant turns with media."""

    id: str
    messages: list[dict[str, Any]]
    images: list[ImageSource] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreferenceExample:
    """One symmetric preference example (SPEC 3).

    ``chosen``/``rejected`` are answers for ``image``; ``contrastive_chosen`` is the preferred answer
    for ``contrastive_image``. Plain DPO data leaves the contrastive fields empty.
    """

    id: str
    question: str
    image: ImageSource
    chosen: str
    rejected: str
    contrastive_image: ImageSource | None = None
    contrastive_chosen: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def user_message(text: str, n_images: int = 0, n_videos: int = 0) -> dict[str, Any]:
    """A user turn with the media placeholders first, then the text (the layout both families expect)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content += [{"type": "video"} for _ in range(n_videos)]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def assistant_message(text: str) -> dict[str, Any]:
    """An assistant turn holding plain text."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def message_text(message: dict[str, Any]) -> str:
    """The concatenated text parts of one message."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")
