"""Ground-R1 grounded rounds (SPEC 2), the pure part: prompts, box parsing, rescaling, cropping, the round loop.

Each round the policy writes ``<think>…</think><box>[x1,y1,x2,y2]</box>`` (a region in the coordinates of the
resized image it was shown, whose size the prompt states) or ``<think>…</think><answer>…</answer>``. A box is
clamped to the resized image, rescaled to the original image, grown to at least ``min_side`` pixels per side,
rejected when its aspect ratio is ``>= max_aspect``, and cropped from the original image; the crop comes back
in a new user turn. The loop stops at an answer or after ``max_rounds`` rounds.

The crop box is whole pixels: the rescaled box is rounded outwards, kept inside the image, and grown about its
centre to at least ``min(min_side, image side)`` pixels per side (shifted back inside when growing runs over a
border), so the crop's pixel size is exactly the box's; the aspect check is made on that final box.

Departures from the released code, on purpose: a box is also clamped at 0 (the released code only clamped the
far edges, so a negative corner made PIL pad the crop with black), and a box grown to the minimum side is
shifted back inside the image instead of running over its border. As in the released code, a round with no
usable box (none written, or rejected) gets the whole original image back and the loop goes on. The follow-up
user turn is a short instruction naming the cropped region (the released code repeated the whole first-turn
instruction every round), and images are not labelled "Picture N:" (no ``add_vision_id``).

Everything here is independent of the model: :func:`run_rounds` is driven by a ``generate`` callable, so the
loop can be tested with a scripted generator; ``prefopt.grpo.grounded_rollout`` plugs in the real policy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from prefopt.rewards.grounding import Box, parse_box

MIN_SIDE = 28  # pixels (SPEC 2): Qwen2.5-VL's patch merger needs at least one 28 px cell
MAX_ASPECT = 200.0  # SPEC 2: Qwen2.5-VL's processor refuses images with an aspect ratio of 200 or more
MAX_ROUNDS = 5

#: Marks the resized input size in the dataset's prompt text; filled per image at rollout time, because the
#: size the model sees depends on the processor (``max_pixels``), not on the data file.
WIDTH_MARK, HEIGHT_MARK = "{input_width}", "{input_height}"

GROUNDED_INSTRUCTION = (
    "Question: {question}\n"
    "First reason inside <think> </think> tags about whether a region of the image would help you answer. "
    "If one would, give one bounding box [x1,y1,x2,y2] inside <box> </box> tags, in pixels of the image you see "
    f"(width {WIDTH_MARK}, height {HEIGHT_MARK}); the box must stay inside the image. "
    "You will then receive that region cropped from the original image; use both images to continue reasoning "
    "inside a new <think> </think>. You may ground several times to refine the region; a box always refers to "
    "the original image. When no further visual information is needed, give the final answer inside "
    "<answer> </answer> tags. Format: <think> reasoning </think> <box>[x1,y1,x2,y2]</box> or "
    "<think> reasoning </think> <answer> final answer </answer>."
)

FOLLOW_UP = (
    "Here is the region {box} cropped from the original image. Continue reasoning inside a new <think> </think>, "
    "then give another <box> or the final <answer>."
)
FOLLOW_UP_NO_BOX = (
    "No usable bounding box was given, so here is the original image again. Continue reasoning inside a new "
    "<think> </think>, then give a <box> or the final <answer>."
)

_BOX_TAG = re.compile(r"<box>(.*?)</box>", re.DOTALL)


def grounded_prompt(question: str, problem_type: str | None = None, options: Sequence[str] = ()) -> str:
    """The first user turn's text: question (+ options), grounding instructions, per-type answer suffix."""
    from prefopt.grpo.prompts import TYPE_SUFFIX, render_options

    text = GROUNDED_INSTRUCTION.replace("{question}", render_options(question.strip(), options))
    return text + TYPE_SUFFIX.get(problem_type or "free-form", "")


def fill_input_size(text: str, width: int, height: int) -> str:
    """The prompt text with the resized input size written in."""
    return text.replace(WIDTH_MARK, str(int(width))).replace(HEIGHT_MARK, str(int(height)))


def parse_box_tag(text: str) -> Box | None:
    """The ``[x1,y1,x2,y2]`` inside the last ``<box>…</box>`` (corners reordered), or None."""
    tags = _BOX_TAG.findall(text or "")
    return parse_box(tags[-1]) if tags else None


def is_answer(text: str) -> bool:
    """Whether a round ends the rollout (it opened an ``<answer>``, as the released loop tests)."""
    return "<answer>" in (text or "")


def rescale_box(box: Box, input_size: tuple[int, int], image_size: tuple[int, int]) -> Box:
    """Clamp a box to the resized input ``(w, h)`` and map it onto the original image ``(W, H)``."""
    (w_in, h_in), (width, height) = input_size, image_size
    x1, y1, x2, y2 = (min(max(v, 0.0), limit) for v, limit in zip(box, (w_in, h_in, w_in, h_in)))
    sx, sy = width / w_in, height / h_in
    return x1 * sx, y1 * sy, x2 * sx, y2 * sy


def _grow(lo: float, hi: float, limit: float, min_side: float) -> tuple[float, float]:
    """Widen ``[lo, hi]`` about its centre to ``min_side``, then shift it back inside ``[0, limit]``."""
    if hi - lo >= min_side:
        return lo, hi
    if limit <= min_side:
        return 0.0, float(limit)
    centre = (lo + hi) / 2.0
    lo, hi = centre - min_side / 2.0, centre + min_side / 2.0
    shift = max(0.0, -lo) - max(0.0, hi - limit)
    return lo + shift, hi + shift


def grow_to_min_side(box: Box, image_size: tuple[int, int], min_side: float = MIN_SIDE) -> Box:
    """The box with each side at least ``min_side`` pixels (or the whole image side when it is smaller)."""
    x1, x2 = _grow(box[0], box[2], image_size[0], min_side)
    y1, y2 = _grow(box[1], box[3], image_size[1], min_side)
    return x1, y1, x2, y2


def aspect_ratio(box: Box) -> float:
    """Long side over short side (``inf`` for a box with a zero side)."""
    w, h = box[2] - box[0], box[3] - box[1]
    return math.inf if min(w, h) <= 0 else max(w, h) / min(w, h)


#: Rescaling is exact only up to float error (1758 / 1764 * 1764 = 1758.0000000000002); rounding outwards past
#: such noise would add a pixel row the image does not have.
_ROUND_EPS = 1e-6


def _fit(lo: int, hi: int, limit: int, min_side: float) -> tuple[int, int]:
    """Integer ``[lo, hi]`` inside ``[0, limit]`` and at least ``min(min_side, limit)`` long."""
    lo, hi = min(max(lo, 0), limit), min(max(hi, 0), limit)
    need = min(math.ceil(min_side), limit)
    if hi - lo < need:
        extra = need - (hi - lo)
        lo, hi = lo - extra // 2, hi + extra - extra // 2
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > limit:
            lo, hi = lo - (hi - limit), limit
    return lo, hi


def pixel_box(
    box: Box, image_size: tuple[int, int] | None = None, min_side: float = 0
) -> tuple[int, int, int, int]:
    """Integer crop box covering ``box``: floor of the near corner, ceiling of the far one.

    With ``image_size`` ``(W, H)`` the box is also kept inside the image and each side is grown about its centre
    to at least ``min(min_side, W or H)`` pixels, so that ``image.crop`` returns exactly the box's size.
    """
    x1, y1 = (math.floor(v + _ROUND_EPS) for v in box[:2])
    x2, y2 = (math.ceil(v - _ROUND_EPS) for v in box[2:])
    if image_size is None:
        return x1, y1, x2, y2
    x1, x2 = _fit(x1, x2, int(image_size[0]), min_side)
    y1, y2 = _fit(y1, y2, int(image_size[1]), min_side)
    return x1, y1, x2, y2


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The pixels of ``image`` inside ``box`` (rounded outwards to whole pixels, kept inside the image)."""
    return image.crop(pixel_box(box, image.size))


@dataclass
class Region:
    """What one round asked for: the box in original coordinates, and the crop box (None when unusable)."""

    box: Box | None  # rescaled to the original image, before growing (what GIoU is measured on)
    crop_box: tuple[int, int, int, int] | None  # whole pixels inside the image, each side >= min(28, side)
    reason: str  # "ok", "no_box" or "aspect"


def locate(
    text: str,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    min_side: float = MIN_SIDE,
    max_aspect: float = MAX_ASPECT,
) -> Region:
    """Parse, rescale, round to whole pixels inside the image, grow and check the box of one round."""
    raw = parse_box_tag(text)
    if raw is None:
        return Region(None, None, "no_box")
    box = rescale_box(raw, input_size, image_size)
    final = pixel_box(box, image_size, min_side)
    if aspect_ratio(final) >= max_aspect:
        return Region(box, None, "aspect")
    return Region(box, final, "ok")


def follow_up_message(region: Region) -> dict[str, Any]:
    """The user turn that hands the crop (or the whole image) back to the policy."""
    if region.crop_box is None:
        text = FOLLOW_UP_NO_BOX
    else:
        text = FOLLOW_UP.format(box="[" + ",".join(str(v) for v in region.crop_box) + "]")
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


@dataclass
class Conversation:
    """One grounded rollout: the original image and, per round, what the policy wrote and was shown."""

    image: Image.Image
    input_size: tuple[int, int]  # (w, h) of the resized image the model sees
    turns: list[str] = field(default_factory=list)  # assistant texts, one per round
    payloads: list[Any] = field(default_factory=list)  # the generator's per-round data (e.g. token ids)
    regions: list[Region] = field(default_factory=list)  # one per non-answer round
    crops: list[Image.Image] = field(default_factory=list)  # images fed back, in order
    follow_ups: list[dict[str, Any]] = field(default_factory=list)  # user turns fed back, in order
    stop: str = ""  # "answer" or "max_rounds"
    state: dict[str, Any] = field(default_factory=dict)  # scratch space for the generator

    @property
    def images(self) -> list[Image.Image]:
        """Every image of the conversation in the order it appears: the original, then the crops."""
        return [self.image, *self.crops]

    @property
    def boxes(self) -> list[Box]:
        """The boxes written (rescaled to the original image), rejected ones included."""
        return [r.box for r in self.regions if r.box is not None]


#: ``generate(conversations) -> [(text, payload), ...]``: one new assistant turn for each conversation.
Generate = Callable[[list[Conversation]], list[tuple[str, Any]]]


def run_rounds(
    generate: Generate,
    conversations: list[Conversation],
    max_rounds: int = MAX_ROUNDS,
    min_side: float = MIN_SIDE,
    max_aspect: float = MAX_ASPECT,
    any_active: Callable[[bool], bool] | None = None,
) -> list[Conversation]:
    """Run the grounded loop on every conversation until each has answered or used ``max_rounds`` rounds.

    ``any_active(local)`` tells whether any process still has a conversation going. In distributed training
    every process must call ``generate`` equally often (ZeRO-3 gathers the weights collectively for each
    generation), so a process that is done keeps calling it with an empty list until all are done.
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    active = list(conversations)
    for round_index in range(max_rounds):
        if not (any_active(bool(active)) if any_active is not None else active):
            break
        outputs = generate(active)
        if len(outputs) != len(active):
            raise RuntimeError(f"the generator returned {len(outputs)} turns for {len(active)} conversations")
        still = []
        for conv, (text, payload) in zip(active, outputs):
            conv.turns.append(text)
            conv.payloads.append(payload)
            if is_answer(text):
                conv.stop = "answer"
                continue
            region = locate(text, conv.input_size, conv.image.size, min_side, max_aspect)
            conv.regions.append(region)
            if round_index + 1 == max_rounds:
                conv.stop = "max_rounds"
                continue
            conv.crops.append(conv.image if region.crop_box is None else crop(conv.image, region.crop_box))
            conv.follow_ups.append(follow_up_message(region))
            still.append(conv)
        active = still
    return conversations
