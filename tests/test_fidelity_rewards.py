"""Seed parity of the rewards (issue 16, items 1-5): each case names the seed rule it encodes.

Seed values marked "(Video-R1)" were obtained by running the released ``accuracy_reward`` of
tulerfeng/Video-R1 ``src/r1-v/src/open_r1/grpo.py`` in /tmp on the same inputs (its code is not part of
prefopt): the free-form completion without a tag scored 0.0, ``cat\\nmat`` vs ``cat mat`` 1.0,
``Cat mat`` vs ``cat mat`` 0.5, ``a b c`` vs ``a b c d e`` 0.6, and ``1`` vs ``1`` (multiple choice) 1.0.
"""

from __future__ import annotations

import pytest

from prefopt.rewards.answers import option_letter, score, word_edit_distance
from prefopt.rewards.format import grounded_format


# ---- item 1: no complete <answer>…</answer>, no accuracy reward ---------------------------------------
@pytest.mark.parametrize("problem_type", ["multiple choice", "numerical", "OCR", "free-form", "regression",
                                          "yes/no", "math", "grounding"])
@pytest.mark.parametrize("completion", [
    "<think>the cat sat</think> the cat sat on the mat",  # no tag at all: the seed's extract_answer gives ""
    "<answer>the cat sat on the mat",  # opened, never closed
    "the cat sat on the mat",
])
def test_no_complete_answer_tag_scores_zero(completion, problem_type):
    # Seed rule (Video-R1 / GWYS extract_answer): the answer is the content of an <answer> tag or "".
    solution = {"multiple choice": "B", "numerical": "3", "regression": "3", "yes/no": "yes",
                "math": "3", "grounding": "[0,0,1,1]"}.get(problem_type, "the cat sat on the mat")
    assert score(completion, f"<answer>{solution}</answer>", problem_type) == 0.0


def test_free_form_think_only_completion_used_to_earn_rouge():
    # Today's bug: the whole text scored 0.74 ROUGE; the seed (Video-R1) gives 0.0.
    assert score("<think>the cat sat</think> the cat sat on the mat", "the cat sat on the mat", "free-form") == 0.0


def test_last_complete_tag_counts_and_bare_solution_is_read_whole():
    # SPEC 1.2: several complete tags, the last counts; the ground truth may be tagged or bare.
    assert score("<answer>A</answer> no, <answer>B</answer>", "B", "multiple choice") == 1.0
    assert score("<answer>A</answer> no, <answer>B", "B", "multiple choice") == 0.0  # last complete is A
    assert score("<answer>yes</answer>", "<answer>yes</answer>", "yes/no") == 1.0


def test_judge_reply_without_answer_tag_earns_no_caption_reward():
    # The caption reward scores the judge's reply with the same rule: a reply cut before </answer> is 0.
    from prefopt.rewards.caption import CaptionReward

    class Judge:
        def ask_many(self, prompts, system=None):
            return ["<think>It is B</think><answer>B", "B", "<think>x</think><answer>B</answer>"]

        def stats(self):
            return {}

    reward = CaptionReward(Judge())
    completions = ["<caption>a red car</caption>"] * 3
    got = reward(["q"] * 3, completions, solution=["B"] * 3, problem_type="multiple choice", problem=["q"] * 3)
    assert got == [0.0, 0.0, 1.0]


# ---- item 2: multiple choice ----------------------------------------------------------------------------
@pytest.mark.parametrize("pred", ["B", "b", "(B)", "B.", "B)", "B: a red car", "B. a cat", "(B) a cat"])
def test_common_letter_forms_match(pred):
    assert score(f"<answer>{pred}</answer>", "<answer>B</answer>", "multiple choice") == 1.0
    assert option_letter(pred) == "B"


@pytest.mark.parametrize("pred", ["A or B", "A B C D", "B and D", "A, B", "(A) or (B)", "B/C"])
def test_several_options_score_zero(pred):
    # A prediction naming several options is no single letter (the seed's exact match gives 0 too).
    assert option_letter(pred) is None
    assert score(f"<answer>{pred}</answer>", "B", "multiple choice") == 0.0


@pytest.mark.parametrize("gt", ["1", "β", "Option B", "none of the above"])
def test_non_letter_ground_truth_is_exact_string_match(gt):
    # Seed rule (Video-R1 / GWYS): output_ans.strip() == gt_ans.strip(); "1" vs "1" scored 1.0 there.
    assert score(f"<answer> {gt} </answer>", f"<answer>{gt}</answer>", "multiple choice") == 1.0
    assert score("<answer>B</answer>", f"<answer>{gt}</answer>", "multiple choice") == 0.0


# ---- item 3: OCR -----------------------------------------------------------------------------------------
def test_ocr_splits_on_any_whitespace():
    # Video-R1 wer(): reference.split() / hypothesis.split(); "cat\nmat" vs "cat mat" is 0 edits -> 1.0.
    assert score("<answer>cat\nmat</answer>", "<answer>cat mat</answer>", "OCR") == 1.0
    assert score("<answer>cat\tmat  hat</answer>", "<answer>cat mat\nhat</answer>", "OCR") == 1.0


def test_ocr_is_case_sensitive_and_normalised_by_reference_words():
    # "Cat mat" vs "cat mat": 1 substitution / 2 words -> 0.5 (Video-R1 gives 0.5).
    assert score("<answer>Cat mat</answer>", "<answer>cat mat</answer>", "OCR") == 0.5
    # "a b c" vs "a b c d e": 2 deletions / 5 -> 0.6 (Video-R1 gives 0.6).
    assert score("<answer>a b c</answer>", "<answer>a b c d e</answer>", "OCR") == pytest.approx(0.6)


def test_word_edit_distance_hand_worked():
    # kitten/sitting as words: k->s substitution, e->i substitution, +g insertion = 3.
    assert word_edit_distance(list("kitten"), list("sitting")) == 3
    assert word_edit_distance([], ["a", "b"]) == 2
    assert word_edit_distance(["a"], []) == 1


# ---- item 5: Ground-R1 format, empty reasoning -----------------------------------------------------------
def _turns(*texts):
    return [{"role": "assistant", "content": t} for t in texts]


@pytest.mark.parametrize("think", ["", "   ", "\n\t"])
def test_grounded_round_with_empty_think_is_no_match(think):
    # Ground-R1 format_reward_all_stage: <think>(.+?)</think> needs reasoning in every round.
    box, answer = "<think>look left</think><box>[1,2,30,40]</box>", "<think>red</think><answer>red</answer>"
    empty_box = f"<think>{think}</think><box>[1,2,30,40]</box>"
    empty_answer = f"<think>{think}</think><answer>red</answer>"
    assert grounded_format(_turns(box, answer)) == 2.0
    assert grounded_format(_turns(empty_box, answer)) == 1.0  # 2 * mean(0, 1)
    assert grounded_format(_turns(box, empty_answer)) == 1.0
    assert grounded_format(_turns(empty_answer)) == 0.0


# ---- item 4: the judge request ---------------------------------------------------------------------------
class _RecordingOpenAI:
    """Stands in for the openai client: records each chat.completions.create call's keyword arguments."""

    def __init__(self):
        self.calls = []
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        from types import SimpleNamespace

        self.calls.append(kwargs)
        message = SimpleNamespace(content="<think>t</think><answer>B</answer>")
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])


def test_judge_request_has_no_token_cap_or_temperature_by_default():
    # Seed rule (GWYS _call_llm): client.chat.completions.create(model, messages, stream=False) only.
    from prefopt.rewards.judge import JudgeClient, JudgeConfig

    fake = _RecordingOpenAI()
    JudgeClient(JudgeConfig())._attempt(fake, [{"role": "user", "content": "q"}])
    assert "max_tokens" not in fake.calls[0] and "temperature" not in fake.calls[0]
    JudgeClient(JudgeConfig(max_tokens=64, temperature=0.0))._attempt(fake, [{"role": "user", "content": "q"}])
    assert fake.calls[1]["max_tokens"] == 64 and fake.calls[1]["temperature"] == 0.0


def test_judge_prompt_follows_the_seed_wording_by_default():
    # Seed rule (GWYS _call_llm): system "You are a helpful assistant"; the user turn is the fixed preamble,
    # "Visual description:\n {caption} \n", "Question:\n {question} \n" (question = problem + "Options:\n"
    # + one option and newline each), the R1 instruction, then the per-type suffix.
    from prefopt.rewards.caption import CaptionReward, judge_prompt

    text = judge_prompt("a red apple", "What fruit?", "multiple choice", ["A. apple", "B. pear"])
    assert text.startswith(
        "Please answer the question only according to the text description of the visual information below "
        "without any visual information.\nVisual description:\n a red apple \nQuestion:\n What fruit?Options:\n"
        "A. apple\nB. pear\n \nfirst thinks about the reasoning process in the mind"
    )
    assert text.endswith("<answer> answer here </answer> Please provide only the single option letter "
                         "(e.g., A, B, C, D, etc.) within the <answer> </answer> tags.")
    seen = []

    class Judge:
        def ask_many(self, prompts, system=None):
            seen.append(system)
            return ["<answer>B</answer>"] * len(prompts)

    CaptionReward(Judge())(["q"], ["<caption>c</caption>"], ["B"], "multiple choice", problem=["q"])
    CaptionReward(Judge(), prompt="prefopt")(["q"], ["<caption>c</caption>"], ["B"], "multiple choice", problem=["q"])
    assert seen[0] == "You are a helpful assistant" and "cannot see" in seen[1]
