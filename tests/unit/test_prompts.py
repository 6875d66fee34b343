"""Prompt templates and the LLaVA-CoT -> four-stage rewrite."""

from __future__ import annotations

import pytest

from prefopt.errors import DataError
from prefopt.prompts import build_prompt, llava_cot_to_four_stage, render_options
from prefopt.rewards.format import four_stage_format


def test_four_stage_multiple_choice_prompt():
    text = build_prompt("What is on the table?", "multiple choice", ["A. a cup", "B. a cat"])
    assert text.startswith("What is on the table?Options:\nA. a cup\nB. a cat\n")  # seed layout
    for tag in ("<prethink>", "<caption>", "<think>", "<answer>"):
        assert tag in text
    # Stages are asked for in order, then the per-type suffix ends the prompt.
    assert text.index("<prethink>") < text.index("<caption>") < text.index("<think>") < text.index("<answer>")
    assert text.endswith(
        "Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags."
    )


def test_r1_numerical_prompt_has_no_caption_stage():
    text = build_prompt("How many dogs?", "numerical", template="r1")
    assert "<caption>" not in text and "<prethink>" not in text
    assert "<think> </think>" in text
    assert "the numerical value" in text
    assert "Options:" not in text


def test_render_options_and_errors():
    assert render_options("Q?", []) == "Q?"
    assert render_options("Q?\n", ["A. x", " "]) == "Q?\nOptions:\nA. x"
    assert render_options("Q?", ["A. x", "B. y"]) == "Q?Options:\nA. x\nB. y"
    with pytest.raises(DataError, match="problem_type"):
        build_prompt("Q", "essay")
    with pytest.raises(ValueError, match="template"):
        build_prompt("Q", "OCR", template="cot")


COT = (
    "<SUMMARY>I will count the apples.</SUMMARY>\n\n<CAPTION>Three red apples on a plate.</CAPTION>\n\n"
    "<REASONING>There are 3 apples.</REASONING>\n\n<CONCLUSION>3</CONCLUSION>"
)


def test_llava_cot_rewrite_from_record_and_string():
    record = {
        "id": "x1",
        "image": "a.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nHow many apples?"},
            {"from": "gpt", "value": COT},
        ],
    }
    out = llava_cot_to_four_stage(record)
    assert out == (
        "<prethink>I will count the apples.</prethink>\n<caption>Three red apples on a plate.</caption>\n"
        "<think>There are 3 apples.</think>\n<answer>3</answer>"
    )
    assert llava_cot_to_four_stage(COT) == out
    assert four_stage_format(out) == 1.0


def test_llava_cot_missing_stage_names_record():
    record = {
        "id": "bad7",
        "conversations": [{"from": "gpt", "value": "<SUMMARY>s</SUMMARY><CONCLUSION>c</CONCLUSION>"}],
    }
    with pytest.raises(DataError, match="bad7.*CAPTION"):
        llava_cot_to_four_stage(record)


def test_grpo_prompts_reexports_the_shared_module():
    """The templates moved to prefopt.prompts (below data/rewards/eval/sft); the old path still works."""
    import prefopt.grpo.prompts as old
    import prefopt.prompts as new

    for name in ("build_prompt", "render_options", "llava_cot_to_four_stage", "TYPE_SUFFIX", "TEMPLATES"):
        assert getattr(old, name) is getattr(new, name)
