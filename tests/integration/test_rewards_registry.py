"""The reward table (prefopt/rewards/registry.py): the fixed ``rewards:`` layout and the list form build the same
reward functions and weights; bad terms fail with one line; a new reward is one registered function."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from prefopt.config import ConfigError
from prefopt.grpo.config import load_recipe, reward_terms
from prefopt.grpo.reward_funcs import build_reward_funcs
from prefopt.rewards import format as fmt
from prefopt.rewards import registry
from prefopt.rewards.answers import accuracy_reward
from prefopt.rewards.caption import CaptionReward
from prefopt.training.common import CONFIG_NAME

TINY = "recipes/tiny/qwen_grpo.yaml"


def list_recipe(tmp_path, rewards, base=TINY):
    """The tiny recipe with ``rewards:`` replaced by the list ``rewards``."""
    data = yaml.safe_load(open(base, encoding="utf-8"))
    data["rewards"] = rewards
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_fixed_layout_converts_to_terms():
    recipe = load_recipe("recipes/gwys/qwen2_5_vl_7b_grpo.yaml")
    terms = reward_terms(recipe)
    assert [(t["name"], t["weight"]) for t in terms] == [("accuracy", 1.0), ("format", 0.1), ("caption", 1.0)]
    assert terms[2]["prompt"] == "seed" and terms[2]["judge"]["model"] == "deepseek-chat"
    off = load_recipe(TINY, ["rewards.caption=false", "rewards.format_weight=0.5"])
    assert reward_terms(off) == [{"name": "accuracy", "weight": 1.0}, {"name": "format", "weight": 0.5}]


@pytest.mark.parametrize("recipe_path, expected", [
    (TINY, [accuracy_reward, fmt.four_stage_format_reward, CaptionReward]),
    ("recipes/gwys/qwen2_5_vl_7b_grpo_baseline.yaml", [accuracy_reward, fmt.r1_format_reward]),
])
def test_fixed_and_list_layouts_build_the_same_rewards(tmp_path, recipe_path, expected):
    fixed = load_recipe(recipe_path)
    as_list = load_recipe(list_recipe(tmp_path, reward_terms(fixed), base=recipe_path))
    assert as_list.rewards_layout() == "list" and fixed.rewards_layout() == "fixed"
    for recipe in (fixed, as_list):
        funcs, weights = build_reward_funcs(recipe, cache_root=str(tmp_path))
        assert [f if callable(f) and not isinstance(f, CaptionReward) else type(f) for f in funcs] == expected
        assert weights == [t["weight"] for t in reward_terms(fixed)]


def test_grounded_rewards_score_the_final_round_and_every_round_format():
    recipe = load_recipe("recipes/ground_r1/qwen2_5_vl_7b_grpo.yaml")
    (accuracy, form), weights = build_reward_funcs(recipe)
    assert form is fmt.grounded_format_reward and weights == [1.0, 1.0]
    rounds = [[{"role": "assistant", "content": "<think>a</think><box>[0,0,1,1]</box>"},
               {"role": "assistant", "content": "<think>b</think><answer>A</answer>"}]]
    assert accuracy([None], rounds, solution=["<answer>A</answer>"], problem_type=["multiple choice"]) == [1.0]


def test_list_form_overrides_address_terms(tmp_path):
    path = list_recipe(tmp_path, [{"name": "accuracy", "weight": 1.0}, {"name": "format", "weight": 0.1},
                                  {"name": "caption", "weight": 1.0, "judge": {"model": "m"}}])
    recipe = load_recipe(path, ["rewards.format.style=r1", "rewards.judge.base_url=http://127.0.0.1:9/v1",
                                "rewards.caption.weight=2"])
    assert reward_terms(recipe)[1] == {"name": "format", "weight": 0.1, "style": "r1"}
    assert reward_terms(recipe)[2]["judge"] == {"model": "m", "base_url": "http://127.0.0.1:9/v1"}
    assert reward_terms(recipe)[2]["weight"] == 2
    dropped = load_recipe(path, ["rewards.caption=false", "rewards.accuracy_weight=3"])
    assert [(t["name"], t["weight"]) for t in reward_terms(dropped)] == [("accuracy", 3), ("format", 0.1)]


@pytest.mark.parametrize("rewards, message", [
    ([{"name": "acuracy", "weight": 1.0}], r"rewards\[0\]: unknown reward 'acuracy' \(did you mean 'accuracy'\?\)"),
    ([{"name": "format", "weight": 0.1, "stile": "r1"}], r"rewards\[0\]: format has no parameter 'stile'"),
    ([{"name": "format", "weight": 0.1, "style": "five_stage"}], r"style must be one of"),
    ([{"name": "accuracy", "weight": "high"}], r"rewards\[0\]\.weight: expected a number"),
    ([{"name": "caption", "prompt": "mine"}], r"prompt must be one of"),
    ([{"name": "caption", "judge": {"bogus": 1}}], r"unknown key 'bogus'"),
    ([], r"non-empty list"),
])
def test_bad_terms_fail_with_one_line(tmp_path, rewards, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(list_recipe(tmp_path, rewards))


def test_caption_term_is_refused_with_grounded_rollouts(tmp_path):
    path = list_recipe(tmp_path, [{"name": "accuracy"}, {"name": "caption"}], base="recipes/tiny/qwen_grounded_grpo.yaml")
    with pytest.raises(ConfigError, match="caption needs the four_stage template"):
        load_recipe(path)


def test_a_new_reward_is_one_registered_function(tiny_qwen_dir, tmp_path, monkeypatch):
    """Register ``brevity`` in this test only (no prefopt file changes), name it in a recipe, train 2 steps:
    TRL logs it under its function's name and weights it as the recipe says."""
    calls = []

    def brevity(prompts, completions, **kwargs):
        calls.append(len(completions))
        return [1.0 / (1 + len(str(c))) for c in completions]

    monkeypatch.setattr(registry, "REWARDS", dict(registry.REWARDS))  # the registration ends with the test
    registry.register_reward("brevity", params={"scale": 1.0})(lambda params, context: brevity)

    from prefopt.cli import main

    rows = []
    for i in range(4):
        Image.new("RGB", (56, 56), (50 * i, 90, 120)).save(tmp_path / f"p{i}.png")
        rows.append({"problem": "Is there a circle?", "solution": "<answer>yes</answer>", "problem_type": "yes/no",
                     "data_type": "image", "path": f"p{i}.png", "problem_id": i})
    (tmp_path / "grpo.json").write_text(json.dumps(rows))
    path = list_recipe(tmp_path, [{"name": "accuracy", "weight": 1.0}, {"name": "brevity", "weight": 0.5}])
    out = tmp_path / "run"
    assert main(["grpo", "--config", str(path), f"model.name_or_path={tiny_qwen_dir}", f"data.path={tmp_path / 'grpo.json'}",
                 f"data.image_root={tmp_path}", "ntk.enabled=false", f"training.output_dir={out}"]) == 0
    history = [row for row in json.loads((out / "trainer_state.json").read_text())["log_history"] if "reward" in row]
    assert calls and len(history) == 2
    for row in history:  # TRL's reward is the weighted sum of the per-function rewards
        expected = 1.0 * row["rewards/accuracy/mean"] + 0.5 * row["rewards/brevity/mean"]
        assert row["reward"] == pytest.approx(expected, abs=1e-6)
    saved = yaml.safe_load((out / CONFIG_NAME).read_text())
    assert [t["name"] for t in saved["rewards"]] == ["accuracy", "brevity"]


def test_a_negative_term_weight_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"rewards\[1\]\.weight must be >= 0"):
        load_recipe(list_recipe(tmp_path, [{"name": "accuracy"}, {"name": "format", "weight": -1}]))
