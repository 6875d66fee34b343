"""REVERSE data checks, hint augmentation, recipe parsing and the generate command's input readers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from prefopt.data.schema import ConversationExample, assistant_message, message_text, user_message
from prefopt.errors import DataError
from prefopt.reverse.data import (
    add_hint,
    check_tagged_answer,
    load_reverse_conversations,
    prepare_reverse_examples,
    tag_answer,
    unconfident_phrases,
)

RECIPES = sorted(Path("recipes/reverse").glob("*.yaml")) + sorted(Path("recipes/tiny").glob("*reverse*.yaml"))


def _example(answer, i=0):
    return ConversationExample(
        id=str(i), messages=[user_message("Describe.", 1), assistant_message(answer)], images=["x.png"]
    )


@pytest.mark.parametrize(
    "bad, why",
    [
        ("<SPAN>a<SPAN>b</CN>", "nested"),
        ("a</CN>", "without an open"),
        ("<SPAN>a cat", "never closed"),
    ],
)
def test_check_tagged_answer_refuses_broken_tags(bad, why):
    with pytest.raises(DataError, match=why) as err:
        check_tagged_answer(bad, path="d.json", row=3)
    assert "d.json, row 3" in str(err.value)
    check_tagged_answer("<SPAN>a</CN> and <SPAN>b</UN>")


def test_unconfident_phrases_and_tag_answer():
    text = tag_answer(["A cat", "a mat"], unconfident="a dog")
    assert text == "<SPAN>A cat</CN> <SPAN>a mat</CN> <SPAN>a dog</UN>"
    assert unconfident_phrases(text) == ["a dog"]
    assert tag_answer(["A cat"]) == "<SPAN>A cat</CN>."


def test_hint_augmentation_is_seeded_and_about_p():
    flagged = [_example("<SPAN>A cat</CN> <SPAN>a dog</UN>", i) for i in range(2000)]
    out = list(prepare_reverse_examples(flagged, hint_probability=0.2, seed=7))
    hinted = [ex for ex in out if "hint" in ex.extra]
    assert 0.17 < len(hinted) / len(out) < 0.23
    again = list(prepare_reverse_examples(flagged, hint_probability=0.2, seed=7))
    assert [ex.id for ex in again if "hint" in ex.extra] == [ex.id for ex in hinted]
    ex = hinted[0]
    assert message_text(ex.messages[0]) == "Describe. (Hint: potential incorrect phrases -> a dog)"
    assert ex.messages[0]["content"][0] == {"type": "image"}  # the image placeholder stays first
    assert message_text(ex.messages[1]) == "<SPAN>A cat</CN> <SPAN>a dog</UN>"  # the answer is unchanged
    assert message_text(flagged[int(ex.id)].messages[0]) == "Describe."  # input records are not modified


def test_hint_skips_records_without_unconfident_phrases():
    rng = random.Random(0)
    clean = _example("<SPAN>A cat</CN>.")
    assert add_hint(clean, rng, probability=1.0) is clean


def test_load_reverse_conversations(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [
        {
            "id": "ok",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": "<SPAN>A</CN> <SPAN>B</UN>"},
            ],
        },
        {
            "id": "bad",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": "<SPAN>A"},
            ],
        },
    ]
    path = tmp_path / "rev.json"
    path.write_text(json.dumps(rows[:1]))
    examples = load_reverse_conversations(path, image_root=tmp_path, hint_probability=1.0)
    assert examples[0].extra["hint"] == ["B"]
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="row 2.*never closed"):
        load_reverse_conversations(path, image_root=tmp_path)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_recipes_parse(recipe):
    from prefopt.sft.config import load_recipe

    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# ") and "prefopt" in first and "sft --reverse" in first
    cfg = load_recipe(recipe)
    assert cfg.reverse and cfg.hint_prob == 0.2
    # the released REVERSE scripts use no tag weighting; the tiny recipes keep 2.0 to exercise the path
    assert cfg.tag_weight == (2.0 if recipe.parent.name == "tiny" else 1.0)
    if "llava15_7b" in recipe.name:
        assert cfg.lora.enabled and (cfg.lora.r, cfg.lora.alpha) == (128, 256)
    if "qwen2_5_vl_3b" in recipe.name:
        assert not cfg.lora.enabled and cfg.model.freeze_vision_tower


def test_generate_reads_three_layouts(tmp_path):
    from prefopt.commands.generate import done_ids, load_items

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    llava = tmp_path / "llava.json"
    llava.write_text(
        json.dumps(
            [
                {
                    "id": 7,
                    "image": "a.png",
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat is it?"},
                        {"from": "gpt", "value": "A cat."},
                        {"from": "human", "value": "More?"},
                        {"from": "gpt", "value": "No."},
                    ],
                }
            ]
        )
    )
    item = load_items(str(llava))[0]
    assert item["id"] == "7" and item["question"] == "What is it?" and len(item["messages"]) == 1
    assert item["images"] == [str(tmp_path / "a.png")]
    r1 = tmp_path / "r1.json"
    r1.write_text(
        json.dumps(
            [
                {
                    "problem_id": 3,
                    "problem": "Which shape?",
                    "options": ["A. cat", "B. dog"],
                    "solution": "<answer>A</answer>",
                    "problem_type": "multiple choice",
                    "data_type": "image",
                    "path": "a.png",
                }
            ]
        )
    )
    item = load_items(str(r1))[0]
    assert item["id"] == "3" and "Options:" in message_text(item["messages"][0]) and len(item["images"]) == 1
    simple = tmp_path / "q.jsonl"
    simple.write_text('{"id": "a", "question": "Q1", "image": "a.png"}\n{"question": "Q2"}\n')
    items = load_items(str(simple))
    assert [i["id"] for i in items] == ["a", "1"] and items[1]["images"] == []
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "question": "Q1"}\n{"id": "a", "question": "Q2"}\n')
    with pytest.raises(DataError, match="row 2.*twice"):
        load_items(str(dup))
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "text": "x"}\n{"id": "b", "te')
    assert done_ids(out) == {"a"}
