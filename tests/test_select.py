"""Reward-variance selection: the pure statistics and `prefopt select` end to end on both tiny families."""

from __future__ import annotations

import json

import pytest

from prefopt.cli import main
from prefopt.errors import PrefoptError
from prefopt.grpo.select import reward_stats, score_responses, select_by_variance


def test_reward_stats_hand_computed():
    """(1,0,1,0): mean 0.5, variance 0.25; (1,1,1,1): mean 1, variance 0; (0.1,0.1,1.1,0.1): mean 0.35,
    variance (3·0.25² + 0.75²)/4 = (0.1875 + 0.5625)/4 = 0.1875."""
    stats = reward_stats([[1, 0, 1, 0], [1, 1, 1, 1], [0.1, 0.1, 1.1, 0.1]])
    assert [s["mean"] for s in stats] == pytest.approx([0.5, 1.0, 0.35])
    assert [s["variance"] for s in stats] == pytest.approx([0.25, 0.0, 0.1875])


def test_select_by_variance_keeps_top_fraction_in_input_order():
    stats = [{"mean": 0, "variance": v} for v in (0.1, 0.3, 0.0, 0.3, 0.2)]
    kept, cut = select_by_variance(stats, 0.5)  # ceil(2.5) = 3 prompts: variances 0.3, 0.3, 0.2
    assert kept == [1, 3, 4] and cut == pytest.approx(0.2)
    assert select_by_variance(stats, 0.01)[0] == [1]  # ties broken by input order, at least one kept
    assert select_by_variance(stats, 1.0)[0] == [0, 1, 2, 3, 4]
    with pytest.raises(PrefoptError):
        select_by_variance(stats, 0.0)


def test_score_responses_weights_rewards():
    """accuracy 1 + 0.1 · format 1 = 1.1 for a correct four-stage answer; 0 for plain wrong text."""
    from prefopt.rewards.answers import accuracy_reward
    from prefopt.rewards.format import four_stage_format_reward

    row = {
        "prompt": [{"role": "user", "content": "q"}],
        "images": [],
        "solution": "<answer>yes</answer>",
        "problem_type": "yes/no",
        "problem": "q",
    }
    good = "<prethink>a</prethink><caption>b</caption><think>c</think><answer>yes</answer>"
    totals = score_responses([accuracy_reward, four_stage_format_reward], [1.0, 0.1], row, [good, "no idea"])
    assert totals == pytest.approx([1.1, 0.0])


def test_cli_select_writes_subset_stats_and_plot(family, tiny_model_dirs, tmp_path):
    """Both families on image prompts; Qwen2.5-VL also on two video prompts."""
    from prefopt.data.formats import read_video_r1
    from tests.test_grpo_trainer import write_mixed_prompts, write_prompts

    data = write_prompts(tmp_path) if family == "llava" else write_mixed_prompts(tmp_path)
    out = tmp_path / "sel"
    short = "llava" if family == "llava" else "qwen"
    rc = main(
        [
            "select",
            "--config",
            f"recipes/tiny/{short}_select.yaml",
            "--k",
            "3",
            "--keep",
            "0.5",
            "--out",
            str(out),
            f"model.name_or_path={tiny_model_dirs[family]}",
            f"data.path={data}",
            f"data.image_root={tmp_path}",
            "training.max_completion_length=4",
        ]
    )
    assert rc == 0
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert len(stats) == 4 and all(len(s["rewards"]) == 3 for s in stats)
    assert sum(s["kept"] for s in stats) == 2
    selected = json.loads((out / "selected.json").read_text())
    source = json.loads(data.read_text())
    # the input rows, with media paths made absolute so that selected.json reads from its own folder
    expected = [dict(source[s["index"]], path=str(tmp_path / source[s["index"]]["path"])) for s in stats if s["kept"]]
    assert selected == expected
    assert len(read_video_r1(out / "selected.json", image_root=tmp_path)) == 2
    assert len(read_video_r1(out / "selected.json")) == 2  # what `grpo data.path=OUT/selected.json` reads
    assert (out / "selection.png").stat().st_size > 0


def test_shared_prefix_generation_matches_expanded_prompts(tiny_dir):
    """Greedy continuations from one shared prefill equal those of k copies of the prompt and image."""
    import torch
    from PIL import Image

    from prefopt.data.schema import user_message
    from prefopt.grpo.select import generate_shared_prefix
    from prefopt.models.adapter import load_adapter

    adapter = load_adapter(str(tiny_dir), dtype="float32")
    model = adapter.model.eval()
    model.generation_config.eos_token_id = None  # full length on both sides
    batch = adapter.encode_prompts(
        [[user_message("Describe the image.", 1)]], [[Image.new("RGB", (56, 56), "red")]]
    )
    k, pad = 3, adapter.tokenizer.pad_token_id
    expanded = {
        key: (v.repeat_interleave(k, 0) if key != "pixel_values" or v.dim() == 4 else v.repeat(k, 1))
        for key, v in batch.items()
    }
    with torch.no_grad():
        ref = model.generate(
            **expanded,
            do_sample=False,
            max_new_tokens=5,
            pad_token_id=pad,
            output_scores=True,
            return_dict_in_generate=True,
        )
        got = generate_shared_prefix(
            model,
            batch,
            k,
            do_sample=False,
            max_new_tokens=5,
            pad_token_id=pad,
            output_scores=True,
            return_dict_in_generate=True,
        )
    assert torch.equal(ref.sequences, got.sequences)
    for a, b in zip(ref.scores, got.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
