"""A procedural "shapes" world on which hallucination is measurable without any download.

Each scene holds two or three coloured shapes at random positions on a grey canvas; the list of objects
present is known exactly. Each kind of shape has one fixed colour, so a tiny vision tower can learn to see
them in minutes on a CPU. From the scenes the module writes every file the demo needs, in the public
layouts prefopt reads:

- ``sft.json``: LLaVA conversations for the cold start (plain captions, and four-stage answers to yes/no
  questions); with probability ``noise`` a response also names the absent co-occurrence partner of a
  shown shape (circle/square, triangle/star, cross/diamond), so the cold-start model learns the
  co-occurrence hallucination real VLMs show and the preference methods have something to remove;
- ``grpo.json``: Video-R1 / GWYS prompts (``problem``, ``solution``, ``problem_type``, ``path``);
- ``symmpo.parquet``: SymMPO rows (captions, and four-stage answers to yes/no questions): chosen = the
  faithful response, rejected = one naming an absent object, contrastive image = the same scene with that
  object actually drawn, whose preferred answer is the rejected response;
- ``pope.jsonl`` (random / popular / adversarial absent objects) and ``chair.jsonl`` held-out sets.
- ``viscot.jsonl``: Ground-R1 VisCoT rows ("what colour is the <shape>?", the shape's box in ``bboxs``).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from prefopt.prompts import build_prompt

#: Object name -> (colour word, RGB). One colour per shape keeps the vision task learnable.
OBJECTS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "circle": ("red", (220, 40, 40)),
    "square": ("blue", (40, 80, 220)),
    "triangle": ("green", (40, 170, 60)),
    "star": ("yellow", (235, 210, 30)),
    "cross": ("purple", (150, 50, 180)),
    "diamond": ("orange", (245, 140, 20)),
}
#: Scene co-occurrence bias: these pairs appear together often (drives POPE's adversarial split).
PARTNERS = {"circle": "square", "square": "circle", "triangle": "star", "star": "triangle",
            "cross": "diamond", "diamond": "cross"}
BACKGROUND = (128, 128, 128)
CAPTION_QUESTION = "Describe the image."


@dataclass
class Scene:
    """One image: objects with their boxes ``[x1, y1, x2, y2]`` in pixels."""

    id: str
    objects: list[str]
    boxes: list[list[int]] = field(default_factory=list)
    size: int = 56

    def render(self) -> Image.Image:
        """Draw the scene."""
        img = Image.new("RGB", (self.size, self.size), BACKGROUND)
        draw = ImageDraw.Draw(img)
        for name, box in zip(self.objects, self.boxes):
            _draw_shape(draw, name, box)
        return img


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, box: list[int]) -> None:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    colour = OBJECTS[name][1]
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "square":
        draw.rectangle(box, fill=colour)
    elif name == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=colour)
    elif name == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)
    elif name == "cross":
        w = (x2 - x1) / 3
        draw.rectangle([x1 + w, y1, x2 - w, y2], fill=colour)
        draw.rectangle([x1, y1 + w, x2, y2 - w], fill=colour)
    elif name == "star":
        r_out, r_in = (x2 - x1) / 2, (x2 - x1) / 5

        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        draw.polygon(pts, fill=colour)


def _place(objects: list[str], size: int, rng: random.Random) -> list[list[int]] | None:
    cells = [(r, c) for r in range(2) for c in range(2)]
    rng.shuffle(cells)
    half = size // 2
    boxes = []
    for _name, (r, c) in zip(objects, cells):
        side = rng.randint(half - 10, half - 4)
        x1 = c * half + rng.randint(0, half - side)
        y1 = r * half + rng.randint(0, half - side)
        boxes.append([x1, y1, x1 + side, y1 + side])
    return boxes


def make_scene(scene_id: str, rng: random.Random, size: int = 56, n_objects: int | None = None) -> Scene:
    """A random scene; partner shapes co-occur more often than chance."""
    n = n_objects or rng.choice([2, 2, 3])
    names = list(OBJECTS)
    first = rng.choice(names)
    objects = [first]
    if rng.random() < 0.6:
        objects.append(PARTNERS[first])
    while len(objects) < n:
        pick = rng.choice(names)
        if pick not in objects:
            objects.append(pick)
    return Scene(scene_id, objects, _place(objects, size, rng), size)


def with_object(scene: Scene, extra: str, rng: random.Random) -> Scene:
    """The same scene with ``extra`` drawn in a free cell (the contrastive image)."""
    objects = scene.objects + [extra]
    half = scene.size // 2
    used = {(b[1] // half, b[0] // half) for b in scene.boxes}
    free = [(r, c) for r in range(2) for c in range(2) if (r, c) not in used]
    r, c = rng.choice(free)
    side = rng.randint(half - 10, half - 4)
    x1, y1 = c * half + rng.randint(0, half - side), r * half + rng.randint(0, half - side)
    return Scene(scene.id + "_plus_" + extra, objects, scene.boxes + [[x1, y1, x1 + side, y1 + side]], scene.size)


def caption(objects: list[str]) -> str:
    """A plain caption naming each object with its colour."""
    parts = [f"a {OBJECTS[o][0]} {o}" for o in objects]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"There is {listed}."


def four_stage_answer(objects: list[str], asked: str, present: bool) -> str:
    """A four-stage prethink/caption/think/answer completion for "Is there a <asked>?"."""
    verdict = "yes" if present else "no"
    colour = OBJECTS[asked][0]
    # The check goes through the colour word, written out BEFORE the verdict: only the caption holds colour
    # words, so once the colour is on the page "is it named?" is a match against an earlier token. Deciding
    # "names"/"does not name" before writing the colour (the earlier wording) asks for shape -> colour ->
    # presence at one position: that cold start answered "yes" to nearly everything in 3 of 3 seeds
    # (docs/demo/tuning.md has the measurements).
    seen = "names" if present else "does not name"
    return (
        f"<prethink>I will list the shapes, then look for a {asked}.</prethink> "
        f"<caption>{caption(objects)}</caption> "
        f"<think>The question asks about a {asked}. A {asked} is {colour}; the caption {seen} {colour}.</think> "
        f"<answer>{verdict}</answer>"
    )


def yes_no_question(name: str) -> str:
    """The POPE-style question about one object."""
    return f"Is there a {name} in the image?"


def mentioned_objects(text: str) -> list[str]:
    """Objects named in a text (singular or plural), in order of first mention."""
    found = []
    for match in re.finditer(r"[a-z]+", text.lower()):
        word = match.group(0)
        stem = next((w for w in (word, word[:-2], word[:-1]) if w in OBJECTS), None)  # x, x+es, x+s
        if stem in OBJECTS and stem not in found:
            found.append(stem)
    return found


def judge_answer(caption_text: str, question: str) -> str:
    """The local judge: answer a yes/no question from the caption text alone, in the R1 format."""
    asked = mentioned_objects(question)
    seen = set(mentioned_objects(caption_text))
    if not asked:
        return "<think>The question names no shape I know.</think><answer>no</answer>"
    verdict = "yes" if asked[0] in seen else "no"
    return f"<think>The caption {'mentions' if verdict == 'yes' else 'does not mention'} it.</think><answer>{verdict}</answer>"


@dataclass
class WorldSizes:
    """How many scenes each split gets, and how noisy the cold-start captions are."""

    train: int = 240
    grpo: int = 64
    preference: int = 160
    eval: int = 60
    noise: float = 0.6  # chance a cold-start response also names the absent partner of a shown shape
    size: int = 56
    grounded: int = 16  # VisCoT-style rows with evidence boxes (viscot.jsonl, for rollout: grounded)
    reverse: int = 16  # REVERSE-tagged captions (reverse.json, for sft --reverse)


def _absent(scene: Scene, rng: random.Random) -> str:
    return rng.choice([o for o in OBJECTS if o not in scene.objects])


def _save(scene: Scene, out: Path) -> str:
    rel = f"images/{scene.id}.png"
    scene.render().save(out / rel)
    return rel


def hallucinated_objects(scene: Scene, rng: random.Random, noise: float) -> list[str]:
    """The objects a cold-start response names: the true ones, plus, with probability ``noise``, the
    absent partner of a shown shape right after it (co-occurrence hallucination, as real VLMs show)."""
    objects = list(scene.objects)
    missing = [(i, PARTNERS[o]) for i, o in enumerate(objects) if PARTNERS[o] not in scene.objects]
    if missing and rng.random() < noise:
        i, partner = rng.choice(missing)
        objects.insert(i + 1, partner)
    return objects


def _negative(scene: Scene, rng: random.Random) -> str:
    """An absent object to ask about: the absent partner of a shown shape half the time, else any."""
    partners = [PARTNERS[o] for o in scene.objects if PARTNERS[o] not in scene.objects]
    return rng.choice(partners) if partners and rng.random() < 0.5 else _absent(scene, rng)


def _question_prompt(question: str) -> str:
    return build_prompt(question, "yes/no", (), "four_stage")


def _sft_rows(scenes: list[Scene], out: Path, rng: random.Random, noise: float) -> list[dict]:
    """Per scene: a caption, and four-stage answers about one shown and one absent shape; every response
    drawn with :func:`hallucinated_objects`, the answer following the (possibly hallucinated) caption."""
    rows = []
    for scene in scenes:
        rel = _save(scene, out)
        rows.append({"id": f"{scene.id}_cap", "image": rel, "conversations": [
            {"from": "human", "value": f"<image>\n{CAPTION_QUESTION}"},
            {"from": "gpt", "value": caption(hallucinated_objects(scene, rng, noise))}]})
        for tag, asked in (("yes", rng.choice(scene.objects)), ("no", _negative(scene, rng))):
            named = hallucinated_objects(scene, rng, noise)
            rows.append({"id": f"{scene.id}_{tag}", "image": rel, "conversations": [
                {"from": "human", "value": "<image>\n" + _question_prompt(yes_no_question(asked))},
                {"from": "gpt", "value": four_stage_answer(named, asked, asked in named)}]})
    return rows


def _grpo_rows(scenes: list[Scene], out: Path, rng: random.Random) -> list[dict]:
    rows = []
    for scene in scenes:
        rel = _save(scene, out)
        asked = rng.choice(scene.objects) if rng.random() < 0.5 else _negative(scene, rng)
        verdict = "yes" if asked in scene.objects else "no"
        rows.append({"id": scene.id, "problem": yes_no_question(asked), "options": [],
                     "solution": f"<answer>{verdict}</answer>", "problem_type": "yes/no",
                     "data_type": "image", "path": rel})
    return rows


def _preference_rows(scenes: list[Scene], out: Path, rng: random.Random) -> list[dict]:
    """Even rows: captions; odd rows: four-stage answers to "Is there a <absent object>?". Either way the
    rejected response names the absent object, and is the right one for the contrastive image."""
    rows = []
    for i, scene in enumerate(scenes):
        extra = _negative(scene, rng)
        contrast = with_object(scene, extra, rng)
        if i % 2 == 0:
            question = CAPTION_QUESTION
            faithful, hallucinated = caption(scene.objects), caption(contrast.objects)
        else:
            question = _question_prompt(yes_no_question(extra))
            faithful = four_stage_answer(scene.objects, extra, False)
            hallucinated = four_stage_answer(contrast.objects, extra, True)
        rows.append({"idx": i, "question": question, "resp_1_w": faithful, "resp_1_l": hallucinated,
                     "resp_2_w": hallucinated, "image_1": _save(scene, out), "image_2": _save(contrast, out)})
    return rows


def _pope_rows(scenes: list[Scene], out: Path, rng: random.Random, counts: Counter) -> list[dict]:
    # Objects the training scenes never showed rank last (count 0): with a small --train the counts can miss
    # every absent object of a scene, and the "popular" pick must still find one.
    popular = [name for name, _ in counts.most_common()] + [o for o in OBJECTS if o not in counts]
    rows = []
    for scene in scenes:
        rel = _save(scene, out)
        absent = [o for o in OBJECTS if o not in scene.objects]
        partners = [PARTNERS[o] for o in scene.objects if PARTNERS[o] in absent]
        negatives = {
            "random": rng.choice(absent),
            "popular": next(o for o in popular if o in absent),
            "adversarial": partners[0] if partners else next(o for o in popular if o in absent),
        }
        for category, negative in negatives.items():
            for name, label in ((rng.choice(scene.objects), "yes"), (negative, "no")):
                rows.append({"question_id": len(rows), "image": rel, "text": yes_no_question(name),
                             "label": label, "category": category})
    return rows


def _viscot_rows(scenes: list[Scene], out: Path, rng: random.Random) -> list[dict]:
    """Ground-R1 VisCoT rows: "what colour is the <shape>?" with that shape's box as the evidence region."""
    rows = []
    for scene in scenes:
        k = rng.randrange(len(scene.objects))
        name = scene.objects[k]
        rows.append({"problem_id": scene.id, "image": _save(scene, out), "width": scene.size, "height": scene.size,
                     "bboxs": [scene.boxes[k]], "dataset": "shapes", "problem": f"What colour is the {name}?",
                     "solution": OBJECTS[name][0]})
    return rows


def _reverse_rows(scenes: list[Scene], out: Path, rng: random.Random, noise: float) -> list[dict]:
    """LLaVA rows whose captions carry REVERSE tags: ``<SPAN>a red circle</CN>`` for each shown shape; with
    probability ``noise`` the caption then names an absent partner as ``<SPAN>…</UN>``, which ends it."""
    rows = []
    for scene in scenes:
        rel = _save(scene, out)
        named = hallucinated_objects(scene, rng, noise)
        parts = []
        for name in named:
            phrase = f"a {OBJECTS[name][0]} {name}"
            if name not in scene.objects:
                parts.append(f"<SPAN>{phrase}</UN>")
                break
            parts.append(f"<SPAN>{phrase}</CN>")
        text = "There is " + " and ".join(parts) + ("" if parts[-1].endswith("</UN>") else ".")
        rows.append({"id": f"{scene.id}_rev", "image": rel, "conversations": [
            {"from": "human", "value": f"<image>\n{CAPTION_QUESTION}"}, {"from": "gpt", "value": text}]})
    return rows


def write_world(out_dir: str | Path, sizes: WorldSizes | None = None, seed: int = 0) -> dict[str, Path]:
    """Write every demo file under ``out_dir``; returns ``{name: path}``."""
    import pandas as pd

    sizes = sizes or WorldSizes()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def scenes(prefix: str, n: int) -> list[Scene]:
        return [make_scene(f"{prefix}{i:05d}", rng, sizes.size) for i in range(n)]

    train = scenes("sft", sizes.train)
    counts = Counter(o for s in train for o in s.objects)
    files = {name: out / name for name in ("sft.json", "grpo.json", "symmpo.parquet", "pope.jsonl", "chair.jsonl")}
    files["sft.json"].write_text(json.dumps(_sft_rows(train, out, rng, sizes.noise), indent=1))
    files["grpo.json"].write_text(json.dumps(_grpo_rows(scenes("grpo", sizes.grpo), out, rng), indent=1))
    pd.DataFrame(_preference_rows(scenes("pref", sizes.preference), out, rng)).to_parquet(files["symmpo.parquet"])
    held_out = scenes("eval", sizes.eval)
    with files["pope.jsonl"].open("w") as fh:
        for row in _pope_rows(held_out, out, rng, counts):
            fh.write(json.dumps(row) + "\n")
    with files["chair.jsonl"].open("w") as fh:
        for scene in held_out:
            fh.write(json.dumps({"image_id": scene.id, "image": f"images/{scene.id}.png",
                                 "question": CAPTION_QUESTION, "objects": scene.objects}) + "\n")
    (out / "world.json").write_text(json.dumps({
        "seed": seed, "sizes": sizes.__dict__, "objects": {k: v[0] for k, v in OBJECTS.items()},
        "synonyms": {name: [name, name + ("es" if name.endswith("s") else "s")] for name in OBJECTS},
    }, indent=1))
    # last, so that adding it left every other file of a seed unchanged
    files["viscot.jsonl"] = out / "viscot.jsonl"
    files["viscot.jsonl"].write_text("".join(
        json.dumps(row) + "\n" for row in _viscot_rows(scenes("ground", sizes.grounded), out, rng)))
    files["reverse.json"] = out / "reverse.json"
    files["reverse.json"].write_text(json.dumps(
        _reverse_rows(scenes("rev", sizes.reverse), out, rng, sizes.noise), indent=1))
    return files
