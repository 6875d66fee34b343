"""Accuracy reward table by problem type (SPEC 1.2), with the tricky cases users hit."""

from __future__ import annotations

import pytest

from prefopt.rewards.answers import accuracy_reward, mra, option_letter, score


@pytest.mark.parametrize(
    "completion, solution, problem_type, expected",
    [
        # multiple choice
        ("<think>..</think><answer>B</answer>", "<answer>B</answer>", "multiple choice", 1.0),
        ("<answer>(B)</answer>", "B", "multiple choice", 1.0),
        ("<answer>B. a cat</answer>", "<answer>B</answer>", "multiple choice", 1.0),
        ("<answer>b</answer>", "B", "multiple choice", 1.0),
        ("<answer>a cat</answer>", "A", "multiple choice", 0.0),  # article, not option A
        ("<answer>C</answer>", "<answer>B</answer>", "multiple choice", 0.0),
        ("<answer></answer>", "<answer>B</answer>", "multiple choice", 0.0),  # empty answer
        ("<answer>A</answer><answer>B</answer>", "<answer>B</answer>", "multiple choice", 1.0),  # last counts
        ("<answer>B</answer> then <answer>A</answer>", "<answer>B</answer>", "multiple choice", 0.0),
        ("B", "B", "multiple choice", 0.0),  # no complete <answer> tag: no accuracy reward (SPEC 1.2)
        # numerical
        ("<answer>3</answer>", "<answer>3</answer>", "numerical", 1.0),
        ("<answer>3.0</answer>", "<answer>3</answer>", "numerical", 0.0),  # decimal vs integer
        ("<answer>3</answer>", "<answer>3.0</answer>", "numerical", 0.0),
        ("<answer>3.14159</answer>", "<answer>3.14</answer>", "numerical", 1.0),  # round to 2 places
        ("<answer>3.149</answer>", "<answer>3.14</answer>", "numerical", 0.0),
        ("<answer>1,000</answer>", "<answer>1000</answer>", "numerical", 0.0),  # comma counts as decimal mark
        ("<answer>1,000</answer>", "<answer>1,000.0</answer>", "numerical", 1.0),
        ("<answer>42.</answer>", "<answer>42</answer>", "numerical", 1.0),  # sentence full stop
        ("<answer>forty</answer>", "<answer>40</answer>", "numerical", 0.0),
        ("<answer>-2</answer>", "<answer>-2</answer>", "numerical", 1.0),
        # OCR: 1 - word edits / max(1, |gt words|)
        ("<answer>hello world</answer>", "<answer>hello world</answer>", "OCR", 1.0),
        ("<answer>hello there world</answer>", "<answer>hello world</answer>", "OCR", 0.5),  # 1 insertion / 2
        ("<answer>a x c d</answer>", "<answer>a b c</answer>", "OCR", 1 - 2 / 3),  # 1 sub + 1 ins
        ("<answer>p q r s t u</answer>", "<answer>a b</answer>", "OCR", 0.0),  # clipped at 0
        # regression: 1 - clip(|p-g|/|g|, 0, 1)
        ("<answer>9</answer>", "<answer>10</answer>", "regression", 0.9),
        ("<answer>25</answer>", "<answer>10</answer>", "regression", 0.0),
        ("<answer>0</answer>", "<answer>0</answer>", "regression", 1.0),
        ("<answer>1</answer>", "<answer>0</answer>", "regression", 0.0),
        ("<answer>about ten</answer>", "<answer>10</answer>", "regression", 0.0),
        # yes/no
        ("<answer>Yes.</answer>", "<answer>yes</answer>", "yes/no", 1.0),
        ("<answer> NO </answer>", "no", "yes/no", 1.0),
        ("<answer>yes</answer>", "no", "yes/no", 0.0),
        # math (symbolic)
        ("<answer>\\frac{1}{2}</answer>", "<answer>0.5</answer>", "math", 1.0),
        ("<answer>2x + x^2</answer>", "<answer>x^2+2x</answer>", "math", 1.0),
        ("<answer>3</answer>", "<answer>4</answer>", "math", 0.0),
        # grounding: (GIoU + 1) / 2
        ("<answer>[0, 0, 10, 10]</answer>", "<answer>[0,0,10,10]</answer>", "grounding", 1.0),
        ("<answer>[0, 0, 10, 10]</answer>", "<answer>[0,0,10,20]</answer>", "grounding", 0.75),
        ("<answer>no box</answer>", "<answer>[0,0,10,20]</answer>", "grounding", 0.0),
    ],
)
def test_score_table(completion, solution, problem_type, expected):
    assert score(completion, solution, problem_type) == pytest.approx(expected)


def test_free_form_rouge_hand_worked():
    """pred "the cat sat", gt "the cat sat down": R1 F = 2·1·0.75/1.75 = 6/7, R2 F = 2·1·(2/3)/(5/3) = 4/5,
    RL F = 6/7 (LCS 3) -> mean = (6/7 + 4/5 + 6/7) / 3."""
    got = score("<answer>the cat sat</answer>", "<answer>the cat sat down</answer>", "free-form")
    assert got == pytest.approx((6 / 7 + 4 / 5 + 6 / 7) / 3)
    # Stemming: "cats sitting" matches "cat sit" word for word.
    assert score("<answer>cats sitting</answer>", "cat sit", "free-form") == pytest.approx(1.0)
    assert score("<answer>zebra</answer>", "cat", "free-form") == 0.0


def test_empty_and_unknown():
    assert score("", "<answer>B</answer>", "multiple choice") == 0.0
    assert score("<answer>B</answer>", "<answer></answer>", "multiple choice") == 0.0
    with pytest.raises(ValueError, match="problem_type"):
        score("a", "a", "essay")


def test_mra_hand_worked():
    """|9-10|/10 = 0.1 < 1-θ for θ ∈ {0.50,…,0.85} (8 of 10; 0.1 < 0.1 fails at θ=0.9) -> 0.8."""
    assert mra(9, 10) == pytest.approx(0.8)
    assert mra("<answer>10</answer>", "10") == 1.0
    assert mra(20, 10) == 0.0
    assert mra("nope", "10") == 0.0


def test_option_letter():
    assert option_letter("(c)") == "C"
    assert option_letter("D: dog") == "D"
    assert option_letter("dog") is None


def test_accuracy_reward_trl_signature():
    completions = [[{"role": "assistant", "content": "<answer>B</answer>"}], "<answer>7</answer>"]
    got = accuracy_reward(
        ["p", "p"],
        completions,
        solution=["<answer>B</answer>", "<answer>7</answer>"],
        problem_type=["multiple choice", "numerical"],
        extra_column=[1, 2],
    )
    assert got == [1.0, 1.0]
    assert accuracy_reward.__name__ == "accuracy"
