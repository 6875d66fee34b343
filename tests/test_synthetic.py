"""The shapes world: scenes, hallucination noise, every file make-data writes, and the local judge."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from prefopt.cli import main
from prefopt.data import synthetic as syn
from prefopt.data.formats import read_dataset
from prefopt.demo.judge import shapes_judge
from prefopt.rewards.caption import judge_prompt


def test_scene_renders_each_shape_in_its_colour():
    scene = syn.make_scene("s", random.Random(3))
    img = scene.render()
    for name, box in zip(scene.objects, scene.boxes, strict=True):
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        assert img.getpixel((cx, cy)) == syn.OBJECTS[name][1], name
    corners = {img.getpixel(p) for p in ((0, 0), (55, 0), (0, 55), (55, 55))}
    assert syn.BACKGROUND in corners


def test_boxes_do_not_overlap_and_contrast_adds_the_object():
    rng = random.Random(0)
    for i in range(50):
        scene = syn.make_scene(str(i), rng)
        extra = next(o for o in syn.OBJECTS if o not in scene.objects)
        plus = syn.with_object(scene, extra, rng)
        assert plus.objects == scene.objects + [extra]
        boxes = plus.boxes
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                ax1, ay1, ax2, ay2 = boxes[a]
                bx1, by1, bx2, by2 = boxes[b]
                assert ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1


def test_hallucination_names_the_absent_partner_at_the_noise_rate():
    rng = random.Random(1)
    scene = syn.Scene("s", ["circle", "triangle"], [[0, 0, 20, 20], [30, 30, 50, 50]])
    draws = [syn.hallucinated_objects(scene, rng, 0.6) for _ in range(4000)]
    extra = [d for d in draws if d != scene.objects]
    assert abs(len(extra) / len(draws) - 0.6) < 0.03
    # the partner is inserted right after the shape it co-occurs with
    assert {tuple(d) for d in extra} == {("circle", "square", "triangle"), ("circle", "triangle", "star")}
    full = syn.Scene("t", ["circle", "square"], [[0, 0, 20, 20], [30, 30, 50, 50]])
    assert all(syn.hallucinated_objects(full, rng, 1.0) == ["circle", "square"] for _ in range(20))


def test_caption_mentions_and_judge():
    text = syn.caption(["circle", "square", "star"])
    assert text == "There is a red circle, a blue square and a yellow star."
    assert syn.mentioned_objects("Two crosses and a diamond; diamonds.") == ["cross", "diamond"]
    assert syn.mentioned_objects("Is there a cross? Circles, stars.") == ["cross", "circle", "star"]
    assert syn.judge_answer("There is a purple cross.", "Is there a cross?").endswith("<answer>yes</answer>")
    assert syn.judge_answer(text, "Is there a star in the image?").endswith("<answer>yes</answer>")
    assert syn.judge_answer(text, "Is there a cross in the image?").endswith("<answer>no</answer>")


def test_served_judge_reads_the_caption_reward_prompt():
    """The demo judge parses exactly what the caption reward sends."""
    prompt = judge_prompt("There is a blue square.", "Is there a square in the image?", "yes/no")
    assert shapes_judge([{"role": "user", "content": prompt}]).endswith("<answer>yes</answer>")
    prompt = judge_prompt("There is a blue square.", "Is there a circle in the image?", "yes/no")
    content = [{"type": "text", "text": prompt}]
    assert shapes_judge([{"role": "system", "content": "x"}, {"role": "user", "content": content}]).endswith(
        "<answer>no</answer>"
    )
    assert shapes_judge([{"role": "user", "content": "hello"}]).endswith("<answer>no</answer>")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    code = main(["make-data", "--out", str(out), "--train", "10", "--grpo", "6", "--preference", "6",
                 "--eval", "5", "--seed", "2"])
    assert code == 0
    return out


def test_make_data_files_read_back_with_prefopt_readers(world):
    sft = read_dataset(world / "sft.json", format="llava", image_root=world)
    assert len(sft) == 30  # a caption and two yes/no answers per scene
    grpo = read_dataset(world / "grpo.json", format="video_r1", image_root=world)
    assert len(grpo) == 6 and {ex.problem_type for ex in grpo} == {"yes/no"}
    prefs = read_dataset(world / "symmpo.parquet", format="symmpo", image_root=world)
    assert len(prefs) == 6 and all(p.contrastive_image is not None for p in prefs)
    world_json = json.loads((world / "world.json").read_text())
    assert set(world_json["synonyms"]) == set(syn.OBJECTS)


def test_grpo_solutions_match_the_scene(world):
    rows = json.loads((world / "grpo.json").read_text())
    for row in rows:
        scene_id = row["path"].split("/")[-1][:-4]
        assert scene_id.startswith("grpo")
        asked = syn.mentioned_objects(row["problem"])[0]
        assert row["solution"] in ("<answer>yes</answer>", "<answer>no</answer>")
        img = syn.Image.open(world / row["path"]).convert("RGB")
        colours = {img.getpixel((x, y)) for x in range(0, 56, 2) for y in range(0, 56, 2)}
        assert (syn.OBJECTS[asked][1] in colours) == (row["solution"] == "<answer>yes</answer>")


def test_preference_rows_are_symmetric(world):
    df = pd.read_parquet(world / "symmpo.parquet")
    for _, row in df.iterrows():
        assert row["resp_1_w"] != row["resp_1_l"] and row["resp_2_w"] == row["resp_1_l"]
        if "<answer>" in row["resp_1_w"]:  # a yes/no pair: the asked (absent) shape
            extra = syn.mentioned_objects(row["question"])[0]
            assert row["resp_1_w"].endswith("<answer>no</answer>") and row["resp_1_l"].endswith("<answer>yes</answer>")
        else:  # a caption pair: the one shape only the rejected caption names
            (extra,) = set(syn.mentioned_objects(row["resp_1_l"])) - set(syn.mentioned_objects(row["resp_1_w"]))
        img2 = syn.Image.open(world / row["image_2"]).convert("RGB")
        colours = {img2.getpixel((x, y)) for x in range(0, 56, 2) for y in range(0, 56, 2)}
        assert syn.OBJECTS[extra][1] in colours  # the rejected response is right for the contrastive image
    assert set(df["question"].str.startswith(syn.CAPTION_QUESTION)) == {True, False}


def test_pope_and_chair_sets(world):
    pope = [json.loads(line) for line in (world / "pope.jsonl").read_text().splitlines()]
    assert len(pope) == 5 * 6 and {r["category"] for r in pope} == {"random", "popular", "adversarial"}
    assert sum(r["label"] == "yes" for r in pope) == 15
    chair = [json.loads(line) for line in (world / "chair.jsonl").read_text().splitlines()]
    by_image = {r["image"]: set(r["objects"]) for r in chair}
    for r in pope:
        asked = syn.mentioned_objects(r["text"])[0]
        assert (asked in by_image[r["image"]]) == (r["label"] == "yes")


def test_make_data_is_deterministic(world, tmp_path):
    assert main(["make-data", "--out", str(tmp_path), "--train", "10", "--grpo", "6", "--preference", "6",
                 "--eval", "5", "--seed", "2"]) == 0
    for name in ("sft.json", "grpo.json", "pope.jsonl", "chair.jsonl"):
        assert (tmp_path / name).read_bytes() == (world / name).read_bytes(), name


def test_make_data_rejects_bad_noise(tmp_path, capsys):
    assert main(["make-data", "--out", str(tmp_path), "--noise", "1.5"]) == 2
    assert "--noise" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_make_data_any_size_works(tmp_path, seed):
    """Issue 21 item 6: one training scene (whose objects the POPE "popular" ranking is counted from) and 112
    GRPO prompts once crashed with StopIteration; every requested size now writes a full world."""
    assert main(["make-data", "--out", str(tmp_path), "--train", "1", "--grpo", "112", "--preference", "1",
                 "--eval", "6", "--seed", str(seed)]) == 0
    pope = [json.loads(line) for line in (tmp_path / "pope.jsonl").read_text().splitlines()]
    assert len(pope) == 6 * 6 and len(json.loads((tmp_path / "grpo.json").read_text())) == 112
    for r in pope:
        if r["category"] == "popular" and r["label"] == "no":
            assert syn.mentioned_objects(r["text"])[0] in syn.OBJECTS


def test_make_data_refuses_a_zero_size(tmp_path, capsys):
    assert main(["make-data", "--out", str(tmp_path), "--grpo", "0"]) == 2
    assert "--grpo must be at least 1" in capsys.readouterr().err
