"""Format rewards: full match, one of each tag, non-empty answer; TRL wrappers accept both completion kinds."""

from __future__ import annotations

import pytest

from prefopt.rewards.format import (
    completion_text,
    four_stage_format,
    four_stage_format_reward,
    r1_format,
    r1_format_reward,
)

GOOD4 = "<prethink>look left</prethink>\n<caption>a red car</caption> <think>it is red</think>\n<answer>B</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD4, 1.0),
        (GOOD4 + "\n", 1.0),  # trailing newline of a generation
        ("<prethink>p</prethink><caption>c</caption><think>t\nmulti\nline</think><answer>A</answer>", 1.0),
        (GOOD4 + " extra", 0.0),  # text after the answer
        ("Sure! " + GOOD4, 0.0),  # text before the first stage
        ("<caption>c</caption><prethink>p</prethink><think>t</think><answer>A</answer>", 0.0),  # order
        ("<prethink>p</prethink><think>t</think><answer>A</answer>", 0.0),  # missing caption
        ("<prethink>p</prethink><caption>c</caption><think>t</think><answer></answer>", 0.0),  # empty answer
        ("<prethink>p</prethink><caption>c</caption><think>t</think><answer>  </answer>", 0.0),
        # Duplicated tags: the seed's lazy regex accepts this; the guard does not.
        (
            "<prethink>p</prethink><caption>c</caption><think>t</think><answer>A</answer><answer>B</answer>",
            0.0,
        ),
        (
            "<prethink>p</prethink><caption>c <think>x</think></caption><think>t</think><answer>A</answer>",
            0.0,
        ),
        ("", 0.0),
    ],
)
def test_four_stage_format(text, expected):
    assert four_stage_format(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>t</think><answer>42</answer>", 1.0),
        ("<think>t</think>\n\n<answer>42</answer>", 1.0),
        ("<think>t</think><answer></answer>", 0.0),
        ("<think>t</think><think>u</think><answer>4</answer>", 0.0),
        ("<answer>4</answer>", 0.0),
        (GOOD4, 0.0),
    ],
)
def test_r1_format(text, expected):
    assert r1_format(text) == expected


def test_trl_wrappers_accept_strings_and_conversations():
    conv = [{"role": "assistant", "content": GOOD4}]
    parts = [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "<think>a</think>"},
                {"type": "text", "text": "<answer>1</answer>"},
            ],
        }
    ]
    assert four_stage_format_reward(["p", "p"], [GOOD4, conv]) == [1.0, 1.0]
    assert r1_format_reward(["p", "p", "p"], [GOOD4, parts, "<think>x</think><answer>y</answer>"]) == [
        0.0,
        1.0,
        1.0,
    ]
    assert completion_text(parts) == "<think>a</think><answer>1</answer>"
    assert four_stage_format_reward.__name__ == "format"
