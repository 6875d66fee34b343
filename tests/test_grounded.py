"""Ground-R1 grounded rounds, pure parts: box parsing, rescaling, clamping, growing, rejection, pixel-exact
cropping, the round loop's stop conditions (scripted generator), the multi-round format reward and the
final-round answer reward."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prefopt.grpo import grounded
from prefopt.grpo.grounded_rollout import final_round
from prefopt.rewards.answers import accuracy_reward
from prefopt.rewards.format import grounded_format, grounded_format_reward


# ---- parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("<think>left</think><box>[1, 2.5, 30,40]</box>", (1.0, 2.5, 30.0, 40.0)),
        ("<think>x</think><box>[30,40,1,2]</box>", (1.0, 2.0, 30.0, 40.0)),  # swapped corners reordered
        ("<box>[0,0,5,5]</box> then <box>[10,11,12,13]</box>", (10.0, 11.0, 12.0, 13.0)),  # the last tag
        ("<think>see [1,2,3,4]</think><answer>red</answer>", None),  # a box outside <box> is no request
        ("<think>x</think><box>[1,2,3]</box>", None),
        ("<think>x</think><box>the red one</box>", None),
        ("", None),
    ],
)
def test_parse_box_tag(text, box):
    assert grounded.parse_box_tag(text) == box


def test_answer_ends_a_rollout_box_does_not():
    assert grounded.is_answer("<think>a</think><answer>b</answer>")
    assert not grounded.is_answer("<think>a</think><box>[1,2,3,4]</box>")


def test_prompt_marks_the_input_size_and_fill_writes_it():
    text = grounded.grounded_prompt("What colour is the star?", "free-form")
    assert text.startswith("Question: What colour is the star?\n")
    assert grounded.WIDTH_MARK in text and grounded.HEIGHT_MARK in text
    filled = grounded.fill_input_size(text, 448, 336)
    assert "width 448, height 336" in filled and "{input_" not in filled


# ---- rescaling, clamping, growing, rejection ------------------------------------------------------------
def test_rescale_maps_input_pixels_to_original_pixels():
    # input 28 x 56 shown for an original of 100 x 200: both axes scale by 100/28 and 200/56
    assert grounded.rescale_box((14, 28, 28, 56), (28, 56), (100, 200)) == pytest.approx((50, 100, 100, 200))
    assert grounded.rescale_box((7, 14, 21, 42), (28, 56), (100, 200)) == pytest.approx((25, 50, 75, 150))


def test_rescale_clamps_to_the_input_image_first():
    # x1 = -5 -> 0, x2 = 40 -> 28 (width), y2 = 60 -> 56 (height)
    assert grounded.rescale_box((-5, 0, 40, 60), (28, 56), (100, 200)) == pytest.approx((0, 0, 100, 200))


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        ((10, 10, 20, 50), (100, 100), (1, 10, 29, 50)),  # x: centre 15, 28 wide -> [1, 29]; y already 40
        ((0, 0, 4, 4), (100, 100), (0, 0, 28, 28)),  # centred [-12, 16] shifted right/down by 12
        ((96, 96, 100, 100), (100, 100), (72, 72, 100, 100)),  # centred [84, 112] shifted back by 12
        (
            (5, 5, 6, 6),
            (20, 100),
            (0, 0, 20, 28),
        ),  # image narrower than 28: the whole width; y: [-8.5, 19.5] + 8.5
        ((10, 10, 40, 50), (100, 100), (10, 10, 40, 50)),  # big enough: unchanged
    ],
)
def test_grow_to_min_side(box, size, expected):
    assert grounded.grow_to_min_side(box, size, 28) == pytest.approx(expected)


def test_aspect_ratio_rejection_at_200():
    # an image 20 px tall cannot be grown to 28 px; a full-height strip 4000 wide has ratio exactly 200
    assert grounded.locate("<box>[0,0,4000,20]</box>", (6000, 20), (6000, 20)).reason == "aspect"
    assert grounded.locate("<box>[0,0,6000,20]</box>", (6000, 20), (6000, 20)).reason == "aspect"
    ok = grounded.locate("<box>[0,0,3998,20]</box>", (6000, 20), (6000, 20))  # 199.9
    assert ok.reason == "ok" and ok.crop_box == pytest.approx((0, 0, 3998, 20))
    # a 1 x 100 sliver in a big image is grown to 28 x 100 first, so it is kept (ratio 3.6)
    grown = grounded.locate("<box>[50,0,51,100]</box>", (1000, 1000), (1000, 1000))
    # whole pixels: x [50, 51] needs 27 more, 13 left and 14 right -> [37, 65]
    assert grown.reason == "ok" and grown.crop_box == (37, 0, 65, 100)
    assert grounded.aspect_ratio((0, 0, 10, 0)) == float("inf")


def test_locate_rescales_then_grows_and_keeps_the_ungrown_box_for_giou():
    region = grounded.locate("<think>t</think><box>[10,10,12,12]</box>", (56, 56), (112, 224))
    assert region.box == pytest.approx((20, 40, 24, 48))  # x * 2, y * 4
    assert region.crop_box == pytest.approx((8, 30, 36, 58))  # both sides grown to 28 about (22, 44)
    assert grounded.locate("<think>no box</think>", (56, 56), (56, 56)).reason == "no_box"


# ---- cropping ---------------------------------------------------------------------------------------------
def coordinate_image(width=64, height=48):
    """Pixel (x, y) has colour (x, y, x + y): every crop can be checked pixel by pixel."""
    ys, xs = np.mgrid[0:height, 0:width]
    array = np.stack([xs, ys, xs + ys], axis=-1).astype(np.uint8)
    return Image.fromarray(array, "RGB"), array


def test_crop_is_pixel_exact_and_rounds_outwards():
    image, array = coordinate_image()
    out = np.asarray(grounded.crop(image, (10.2, 5.7, 20.1, 15.0)))
    # floor(10.2)=10, floor(5.7)=5, ceil(20.1)=21, ceil(15.0)=15 -> columns 10..20, rows 5..14
    assert out.shape == (10, 11, 3)
    np.testing.assert_array_equal(out, array[5:15, 10:21])
    assert tuple(out[0, 0]) == (10, 5, 15) and tuple(out[-1, -1]) == (20, 14, 34)


def test_locate_then_crop_on_a_resized_view():
    image, array = coordinate_image(64, 48)
    # the model saw a 32 x 24 view: [4, 3, 20, 20] there is [8, 6, 40, 40] in the original, 32 x 34 >= 28
    region = grounded.locate("<box>[4,3,20,20]</box>", (32, 24), image.size)
    np.testing.assert_array_equal(np.asarray(grounded.crop(image, region.crop_box)), array[6:40, 8:40])


# ---- the round loop ---------------------------------------------------------------------------------------
BOX = "<think>look closer</think><box>[8,8,40,40]</box>"
ANSWER = "<think>done</think><answer>red</answer>"


class Scripted:
    """Conversation k says ``scripts[k][round]``; records how many conversations each call received."""

    def __init__(self, scripts):
        self.scripts, self.calls = scripts, []

    def __call__(self, convs):
        self.calls.append(len(convs))
        out = []
        for conv in convs:
            k, r = conv.state["k"], len(conv.turns)
            assert len(conv.images) == r + 1  # the original plus one image per finished round
            assert len(conv.follow_ups) == r
            out.append((self.scripts[k][r], f"payload{k}.{r}"))
        return out


def conversations(n, size=(64, 48)):
    image, _ = coordinate_image(*size)
    convs = [grounded.Conversation(image=image, input_size=size) for _ in range(n)]
    for k, conv in enumerate(convs):
        conv.state["k"] = k
    return convs


def test_round_loop_stop_conditions():
    scripts = [
        [ANSWER],  # answers at once
        [BOX, BOX, ANSWER],  # two crops, then answers in round 3
        [BOX, "<think>no region</think>", BOX, BOX],  # never answers: stops at max_rounds=4
        ["<think>a</think><box>[0,0,4000,20]</box>", ANSWER],  # aspect ratio 200: gets the whole image back
    ]
    gen = Scripted(scripts)
    convs = conversations(4)
    convs[3].image, convs[3].input_size = Image.new("RGB", (6000, 20)), (6000, 20)
    convs = grounded.run_rounds(gen, convs, max_rounds=4)
    assert gen.calls == [4, 3, 2, 1]  # finished conversations are not generated for again
    assert [c.stop for c in convs] == ["answer", "answer", "max_rounds", "answer"]
    assert [len(c.turns) for c in convs] == [1, 3, 4, 2]
    assert convs[1].payloads == ["payload1.0", "payload1.1", "payload1.2"]
    # crops: [8,8,40,40] of a 64 x 48 original seen at 64 x 48 is a 32 x 32 crop
    assert [im.size for im in convs[1].crops] == [(32, 32), (32, 32)]
    assert len(convs[2].crops) == 3 and convs[2].crops[1] is convs[2].image  # "no region" -> original
    assert [r.reason for r in convs[2].regions] == ["ok", "no_box", "ok", "ok"]  # the last box is recorded
    assert len(convs[2].boxes) == 3
    assert convs[3].crops == [convs[3].image] and convs[3].regions[0].reason == "aspect"
    assert convs[3].follow_ups[0]["content"][1]["text"] == grounded.FOLLOW_UP_NO_BOX
    follow = convs[1].follow_ups[0]
    assert follow["role"] == "user" and follow["content"][0] == {"type": "image"}
    assert "[8,8,40,40]" in follow["content"][1]["text"]
    assert [len(c.images) for c in convs] == [1, 3, 4, 2]


def test_round_loop_keeps_calling_while_other_processes_are_active():
    gen = Scripted([[ANSWER], [ANSWER]])
    others = iter([True, True, True, False])  # another process still generates in rounds 2 and 3
    convs = grounded.run_rounds(gen, conversations(2), max_rounds=5, any_active=lambda local: next(others))
    assert gen.calls == [2, 0, 0]  # empty calls keep this process in step, then all stop together
    assert [c.stop for c in convs] == ["answer", "answer"]
    gen = Scripted([[BOX, BOX, ANSWER]])
    convs = grounded.run_rounds(gen, conversations(1), max_rounds=2, any_active=lambda local: True)
    assert gen.calls == [1, 1] and convs[0].stop == "max_rounds"  # never more than max_rounds calls


def test_round_loop_single_round_and_bad_generators():
    gen = Scripted([[BOX], [ANSWER]])
    convs = grounded.run_rounds(gen, conversations(2), max_rounds=1)
    assert [c.stop for c in convs] == ["max_rounds", "answer"] and convs[0].crops == []
    with pytest.raises(ValueError, match="max_rounds"):
        grounded.run_rounds(gen, conversations(1), max_rounds=0)
    with pytest.raises(RuntimeError, match="returned 0 turns"):
        grounded.run_rounds(lambda convs: [], conversations(1))


# ---- rewards ----------------------------------------------------------------------------------------------
def turns(*texts):
    return [{"role": "assistant", "content": t} for t in texts]


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        (turns(ANSWER), 2.0),  # one round, well formed: 2 * 1/1
        (turns(BOX, ANSWER), 2.0),
        (turns("<box>[1,2,3,4]</box>", ANSWER), 1.0),  # round 1 lacks <think>: 2 * (0 + 1) / 2
        (turns(BOX, BOX, "<think>x</think>"), 4 / 3),  # final round without an answer: 2 * 2/3
        (turns(BOX, BOX), 1.0),  # last round must answer: 2 * (1 + 0) / 2
        (turns(BOX, "<think>a</think><answer></answer>"), 1.0),  # empty answer fails its round
        (turns("<think>a</think><think>b</think><box>[1,2,3,4]</box>", ANSWER), 1.0),  # repeated tag
        (turns("<think>a</think><box>[-1,2,3,4]</box>", ANSWER), 1.0),  # negative coordinate
        (ANSWER, 2.0),  # a plain string is one round
        ([], 0.0),
    ],
)
def test_grounded_format(completion, score):
    assert grounded_format(completion) == pytest.approx(score)


def test_grounded_format_reward_is_a_trl_reward_named_format():
    assert grounded_format_reward.__name__ == "format"
    assert grounded_format_reward(None, [turns(BOX, ANSWER), turns(BOX)]) == [2.0, 0.0]


def test_final_round_accuracy_reads_the_last_turn_only():
    reward = final_round(accuracy_reward)
    assert reward.__name__ == "accuracy"
    completions = [
        turns("<answer>no</answer>", "<answer>yes</answer>"),
        turns("<answer>yes</answer>", "<think>t</think><answer>no</answer>"),
    ]
    got = reward(None, completions, solution=["yes", "yes"], problem_type=["yes/no"] * 2)
    assert got == [1.0, 0.0]


# ---- recipes and data -------------------------------------------------------------------------------------
def test_grounded_recipes_parse_and_bad_combinations_are_config_errors():
    from prefopt.config import ConfigError
    from prefopt.grpo.config import load_recipe

    seed = load_recipe("recipes/ground_r1/qwen2_5_vl_7b_grpo.yaml")
    assert seed.rollout == "grounded" and seed.grounded.max_rounds == 5 and seed.grounded.min_side == 28
    assert seed.data.format == "viscot" and seed.max_pixels == 401408 and not seed.rewards.caption
    args = seed.training_args()
    assert (args["learning_rate"], args["num_generations"], args["max_completion_length"]) == (1e-6, 8, 512)
    for name in ("qwen", "llava"):
        assert load_recipe(f"recipes/tiny/{name}_grounded_grpo.yaml").rollout == "grounded"
    tiny = "recipes/tiny/qwen_grounded_grpo.yaml"
    with pytest.raises(ConfigError, match="used together"):
        load_recipe(tiny, ["data.template=r1"])
    with pytest.raises(ConfigError, match="rewards.caption"):
        load_recipe(tiny, ["rewards.caption=true"])
    with pytest.raises(ConfigError, match="use_vllm"):
        load_recipe(tiny, ["training.use_vllm=true"])
    with pytest.raises(ConfigError, match="max_rounds"):
        load_recipe(tiny, ["grounded.max_rounds=0"])


def test_viscot_world_rows_feed_the_grounded_dataset(tmp_path):
    from prefopt.data.synthetic import WorldSizes, write_world
    from prefopt.grpo.data import build_dataset, read_prompt_examples

    path = write_world(tmp_path, WorldSizes(1, 1, 1, 1, grounded=3), seed=1)["viscot.jsonl"]
    examples = read_prompt_examples(path, "viscot", image_root=str(tmp_path))
    assert len(examples) == 3
    dataset = build_dataset(examples, "grounded")
    row = dataset[0]
    text = row["prompt"][0]["content"][-1]["text"]
    assert text.startswith("Question: What colour is the ") and grounded.WIDTH_MARK in text
    (box,) = row["bboxs"]
    image = row["images"][0]
    assert 0 <= box[0] < box[2] <= image.size[0] and 0 <= box[1] < box[3] <= image.size[1]
    # the annotated box really holds the asked-for shape: its colour is the solution
    from prefopt.data.synthetic import OBJECTS

    colours = {colour: rgb for colour, rgb in OBJECTS.values()}
    inside = grounded.crop(image.convert("RGB"), tuple(box))
    assert colours[row["solution"]] in set(inside.getdata())


def test_grounded_template_refuses_rows_without_exactly_one_image():
    from prefopt.data.schema import PromptExample
    from prefopt.errors import DataError
    from prefopt.grpo.data import example_row

    two = PromptExample(id="q7", messages=[], problem="Which?", images=["a.png", "b.png"])
    with pytest.raises(DataError, match="prompt q7: the grounded template needs exactly one image"):
        example_row(two, "grounded")
