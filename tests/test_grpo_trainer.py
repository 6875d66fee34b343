"""`prefopt grpo` on both tiny families with accuracy, format and caption (HTTP judge) rewards and the NTK term,
plus the check that the hook-captured features give the same NTK loss as an explicit forward."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from prefopt.cli import main
from prefopt.grpo.trainer import GroundedGRPOTrainer
from prefopt.models.registry import adapter_class
from prefopt.models.tiny import TINY_FAMILIES

VIDEO_FAMILIES = [f for f in TINY_FAMILIES if adapter_class(f).supports_video]

CANNED = "<prethink>look</prethink><caption>a red circle</caption><think>so</think><answer>yes</answer>"
ROWS = [
    {"problem": "Is there a circle?", "solution": "<answer>yes</answer>", "problem_type": "yes/no"},
    {
        "problem": "Which shape is red?",
        "options": ["A. circle", "B. square"],
        "solution": "<answer>A</answer>",
        "problem_type": "multiple choice",
    },
    {"problem": "How many shapes are there?", "solution": "<answer>2</answer>", "problem_type": "numerical"},
    {"problem": "Is there a star?", "solution": "<answer>no</answer>", "problem_type": "yes/no"},
]


def write_prompts(folder):
    """Four image prompts in the Video-R1 / GWYS JSON layout, images drawn with PIL."""
    rows = []
    for i, row in enumerate(ROWS):
        Image.new("RGB", (56, 56), (60 * i, 90, 200 - 40 * i)).save(folder / f"p{i}.png")
        rows.append({**row, "data_type": "image", "path": f"p{i}.png", "problem_id": i})
    path = folder / "grpo.json"
    path.write_text(json.dumps(rows))
    return path


def judge_knows(messages):
    """A judge that answers every question correctly (so each canned caption earns caption reward 1)."""
    text = json.dumps(messages)
    row = next(r for r in ROWS if r["problem"] in text)
    return f"<think>from the description</think>{row['solution']}"


@pytest.fixture
def scripted_policy(monkeypatch):
    """Every other completion is a well-formed four-stage answer, so rewards vary and the judge gets captions."""
    original = GroundedGRPOTrainer._generate_single_turn

    def scripted(self, *args, **kwargs):
        ids, logprobs = original(self, *args, **kwargs)
        canned = self._tokenizer.encode(CANNED, add_special_tokens=False) + [self.eos_token_ids[0]]
        return [canned if i % 2 == 0 else c for i, c in enumerate(ids)], logprobs

    monkeypatch.setattr(GroundedGRPOTrainer, "_generate_single_turn", scripted)


def test_cli_grpo_all_rewards_and_ntk(family, tiny_model_dirs, tmp_path, scripted_policy):
    from prefopt.models.adapter import load_adapter
    from prefopt.testing.judge_server import JudgeServer

    data = write_prompts(tmp_path)
    out = tmp_path / "run"
    short = "llava" if family == "llava" else "qwen"
    with JudgeServer(answer=judge_knows) as server:
        rc = main(
            [
                "grpo",
                "--config",
                f"recipes/tiny/{short}_grpo.yaml",
                f"model.name_or_path={tiny_model_dirs[family]}",
                f"data.path={data}",
                f"data.image_root={tmp_path}",
                f"rewards.judge.base_url={server.base_url}",
                "rewards.judge.max_retries=0",
                f"training.output_dir={out}",
            ]
        )
        requests = server.requests
    assert rc == 0
    assert requests > 0  # the caption reward reached the judge over HTTP
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [row for row in history if "ntk/loss" in row]
    assert len(steps) == 2
    for key in (
        "rewards/accuracy/mean",
        "rewards/format/mean",
        "rewards/caption/mean",
        "ntk/positives",
        "judge/calls",
        "judge/failures",
    ):
        assert all(key in row for row in steps), key
    assert all(math.isfinite(row["ntk/loss"]) for row in steps)
    # half the completions are the canned answer: format 1 for them, 0 for random text
    assert steps[0]["rewards/format/mean"] == pytest.approx(0.5)
    assert all(row["rewards/caption/mean"] == pytest.approx(0.5) for row in steps)
    assert steps[-1]["judge/calls"] == 4 and steps[-1]["judge/failures"] == 0
    assert (out / "checkpoint-2").is_dir() and (out / "training_curves.png").is_file()
    assert load_adapter(str(out)).family == family
    assert load_adapter(str(out / "checkpoint-2")).family == family


def _batch(adapter, n_gen=2):
    """A GRPO-like batch (left-padded prompts, right-padded completions) for the NTK consistency check."""
    prompts = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["problem"]}]}]
        for r in ROWS[:2]
    ]
    images = [[Image.new("RGB", (56, 56), (200, 40 * i, 40))] for i in range(2)]
    enc = adapter.encode_prompts(prompts, images)
    torch.manual_seed(0)
    completion_ids = torch.randint(5, 60, (2, 6))
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[1, 4:] = 0
    return enc, completion_ids, completion_mask


@pytest.mark.parametrize("mode", ["gradient", "hidden"])
def test_hook_features_match_explicit_forward(tiny_dir, mode):
    """The backbone hook + LM-head recompute gives the NTK loss of an explicit ``output_hidden_states`` forward."""
    from prefopt.grpo import ntk
    from prefopt.grpo.config import NTKSettings
    from prefopt.grpo.trainer import _HiddenCapture, backbone_of, lm_head_of, ntk_features
    from prefopt.models.adapter import load_adapter

    adapter = load_adapter(str(tiny_dir))
    model = adapter.model.float()
    enc, completion_ids, completion_mask = _batch(adapter)
    input_ids = torch.cat([enc["input_ids"], completion_ids], dim=1)
    attention = torch.cat([enc["attention_mask"], completion_mask], dim=1)
    media = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    for key in (
        "mm_token_type_ids",
        "token_type_ids",
    ):  # per-token fields: completions are text (0), as in TRL
        if key in media:
            media[key] = torch.cat([media[key], torch.zeros_like(completion_ids)], dim=1)
    inputs = {
        "prompt_ids": enc["input_ids"],
        "prompt_mask": enc["attention_mask"],
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "data_types": ["image", "image"],
    }
    settings = NTKSettings(mode=mode)
    capture = _HiddenCapture()
    handle = backbone_of(model).register_forward_hook(capture)
    with capture.armed_for():
        explicit = model(input_ids=input_ids, attention_mask=attention, output_hidden_states=True, **media)
    handle.remove()
    generator_state = torch.random.get_rng_state()
    sim_hook = ntk_features(capture.hidden(), lm_head_of(model), inputs, SimpleNamespace(**vars(settings)))
    # explicit reference: the model's own logits and last hidden state at the completion-predicting positions
    p = enc["input_ids"].size(1)
    T = completion_ids.size(1)
    hidden = explicit.hidden_states[-1]
    torch.random.set_rng_state(generator_state)
    if mode == "gradient":
        gram = ntk.gradient_kernel(
            hidden[:, p - 1 : p - 1 + T],
            explicit.logits[:, p - 1 : p - 1 + T],
            completion_ids,
            completion_mask,
        )
        sim_ref = ntk.cosine_from_gram(gram)
    else:
        feats = ntk.hidden_proxy_features(hidden[:, :p], enc["attention_mask"])
        sim_ref = ntk.peer_similarity(feats, ["image", "image"], peers=7)
    assert torch.allclose(sim_hook, sim_ref, atol=1e-5, equal_nan=True)
    threshold = settings.resolved_threshold()
    loss_hook = ntk.info_nce(sim_hook, threshold, 0.5)
    loss_ref = ntk.info_nce(sim_ref, threshold, 0.5)
    assert torch.allclose(loss_hook, loss_ref, atol=1e-6)


def test_recipes_parse_and_reject_unknown_training_key():
    from prefopt.config import ConfigError
    from prefopt.grpo.config import load_recipe

    for name in (
        "gwys/qwen2_5_vl_7b_grpo.yaml",
        "gwys/qwen2_5_vl_7b_grpo_baseline.yaml",
        "tiny/qwen_grpo.yaml",
        "tiny/llava_grpo.yaml",
        "tiny/qwen_select.yaml",
        "tiny/llava_select.yaml",
    ):
        recipe = load_recipe(f"recipes/{name}")
        assert recipe.training_args()["output_dir"]
    baseline = load_recipe("recipes/gwys/qwen2_5_vl_7b_grpo_baseline.yaml")
    assert baseline.data.template == "r1" and not baseline.ntk.enabled and not baseline.rewards.caption
    with pytest.raises(ConfigError, match="num_generation"):
        load_recipe("recipes/tiny/qwen_grpo.yaml", ["training.num_generation=4"])
    with pytest.raises(ConfigError, match="ntk.mode"):
        load_recipe("recipes/tiny/qwen_grpo.yaml", ["ntk.mode=exact"])


def write_clip(path, n_frames=4, rate=2, size=56):
    """A tiny MPEG-4 clip of flat frames (PyAV)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_mixed_prompts(folder):
    """Two image and two video prompts (Video-R1 layout), so batches hold both media kinds."""
    rows = json.loads(write_prompts(folder).read_text())
    for i in (2, 3):
        write_clip(folder / f"v{i}.mp4")
        rows[i] = {**rows[i], "data_type": "video", "path": f"v{i}.mp4"}
    path = folder / "mixed.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_cli_grpo_video_prompts_on_qwen(family, tiny_model_dirs, tmp_path, monkeypatch):
    """Video rows reach generation and the loss forward with their video tensors (video-capable families)."""
    seen = []
    original = GroundedGRPOTrainer._get_per_token_logps_and_entropies

    def spy(self, model, input_ids, *args, **kwargs):
        result = original(self, model, input_ids, *args, **kwargs)
        if self._video_rows is not None:
            n_video_tokens = int((input_ids == self.adapter.image_token_ids[1]).sum())
            tensors = [r for r in self._video_rows if r is not None]
            grid_tokens = sum(int(r["video_grid_thw"].prod()) // 4 for r in tensors)
            seen.append((n_video_tokens, grid_tokens))
        return result

    monkeypatch.setattr(GroundedGRPOTrainer, "_get_per_token_logps_and_entropies", spy)
    data = write_mixed_prompts(tmp_path)
    rc = main(
        [
            "grpo",
            "--config",
            "recipes/tiny/qwen_grpo.yaml",
            f"model.name_or_path={tiny_model_dirs[family]}",
            f"data.path={data}",
            f"data.image_root={tmp_path}",
            "rewards.caption=false",
            "data.video_frames=4",
            "training.per_device_train_batch_size=8",
            "training.max_steps=1",
            f"training.output_dir={tmp_path / 'run'}",
        ]
    )
    assert rc == 0
    # every forward that saw video rows had as many video placeholders as the video grids need (merge 2x2)
    assert seen and all(tokens == needed > 0 for tokens, needed in seen)


def test_cli_grpo_video_on_llava_is_a_clear_error(tiny_llava_dir, tmp_path, capsys):
    data = write_mixed_prompts(tmp_path)
    rc = main(
        [
            "grpo",
            "--config",
            "recipes/tiny/llava_grpo.yaml",
            f"model.name_or_path={tiny_llava_dir}",
            f"data.path={data}",
            f"data.image_root={tmp_path}",
            "rewards.caption=false",
            f"training.output_dir={tmp_path / 'run'}",
        ]
    )
    assert rc == 2
    assert "video" in capsys.readouterr().err


def test_limit_pixels_caps_budgeted_processors_only(tiny_model_dirs):
    """max_pixels = 4·56² = 12544 on a 448² image: Qwen resizes to 112² = 8×8 patches of 14 px; CLIP is unchanged."""
    from prefopt.grpo.trainer import limit_pixels
    from prefopt.models.adapter import load_adapter

    messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]]
    images = [[Image.new("RGB", (448, 448))]]
    qwen = load_adapter(str(tiny_model_dirs["qwen2_5_vl"]), load_model=False)
    before = qwen.encode_prompts(messages, images)["image_grid_thw"].prod().item()
    assert limit_pixels(qwen.processor, 4 * 56 * 56)
    after = qwen.encode_prompts(messages, images)["image_grid_thw"].prod().item()
    assert after == 64 < before
    llava = load_adapter(str(tiny_model_dirs["llava"]), load_model=False)
    length = llava.encode_prompts(messages, images)["input_ids"].shape
    assert not limit_pixels(llava.processor, 4 * 56 * 56)
    assert llava.encode_prompts(messages, images)["input_ids"].shape == length


def test_cli_grpo_hidden_ntk_and_kl_clamp_at_the_seed_layout(tiny_qwen_dir, tmp_path, scripted_policy, monkeypatch):
    """Issue 16 items 6 and 8 end to end: micro-batches of G copies of one prompt, as the GWYS recipe lays them out.

    The hidden proxy finds its peers in the feature bank (step 1: none, step 2: one, a lone peer gives 0; step 3:
    two, a non-zero loss), and the seed's KL clamp reaches TRL's loss through the reference log-probs.
    """
    import prefopt.grpo.kl as kl

    calls = []
    original = kl.clamped_reference

    def spy(logps, ref, clamp):
        calls.append((tuple(logps.shape), logps.requires_grad, clamp))
        return original(logps, ref, clamp)

    monkeypatch.setattr(kl, "clamped_reference", spy)
    data = write_prompts(tmp_path)
    out = tmp_path / "run"
    rc = main(
        [
            "grpo", "--config", "recipes/tiny/qwen_grpo.yaml", f"model.name_or_path={tiny_qwen_dir}",
            f"data.path={data}", f"data.image_root={tmp_path}", "rewards.caption=false", "ntk.mode=hidden",
            "training.num_generations=4", "training.per_device_train_batch_size=4", "training.max_steps=3",
            "training.beta=0.04", "training.save_steps=100", f"training.output_dir={out}",
        ]
    )
    assert rc == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [row["ntk/loss"] for row in history if "ntk/loss" in row]
    assert losses[:2] == [0.0, 0.0] and losses[2] > 0.0
    assert len(calls) == 3 and all(grad and clamp == 10.0 for _, grad, clamp in calls)
