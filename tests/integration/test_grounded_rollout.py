"""Grounded rollouts through the GRPO trainer on both tiny families, with a scripted policy that asks for
boxes: the loss mask covers the assistant turns only (never user-turn or image tokens), the token ids are the
chat-template rendering of the whole multi-image conversation, the loss forward gets every image, rewards and
metrics (rounds, GIoU) come out as computed by hand; and a 2-step `prefopt grpo` run with `rollout: grounded`."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from prefopt.cli import main
from prefopt.grpo import grounded
from prefopt.grpo.grounded_rollout import GroundedRollout, image_token_id, inner_processor
from prefopt.grpo.trainer import GroundedGRPOTrainer
from prefopt.models.registry import adapter_for_model
from prefopt.rewards.grounding import giou_score
from tests.helpers import assert_checkpoint_changed, assert_params_changed

BOX_A = "<think>the shape</think><box>[8,8,40,40]</box>"
BOX_B = "<think>closer</think><box>[0,0,2,2]</box>"  # grown to 28 x 28 before cropping
ANSWER = "<think>seen</think><answer>red</answer>"
UNTHOUGHT = "<answer>red</answer>"  # no <think>: grounded format 0


def script(row: int, round_index: int, lead: str = "") -> str:
    """Even rows: box, box, answer (3 rounds, 2 crops); odd rows answer at once.

    ``lead``: LLaVA's (Vicuna) template puts a space between ``ASSISTANT:`` and the reply, inside the part the
    model generates, so a LLaVA policy writes it.
    """
    if row % 2:
        return lead + ANSWER
    return lead + [BOX_A, BOX_B, ANSWER][round_index]


def lead_of(model) -> str:
    return adapter_for_model(model).reply_prefix


@pytest.fixture
def scripted_rounds(monkeypatch):
    """The real policy generates (so it must accept the multi-image inputs), then the script replaces its text.

    Each call holds the still-active rows in their original order, and only even rows go on after round 1,
    so the rows of a call are known from the previous call.
    """
    original = GroundedGRPOTrainer._generate_single_turn
    seen: list[list[int]] = []

    def scripted(self, ids, images, fields, num_generations, **kwargs):
        real = original(self, ids, images, fields, num_generations, **kwargs)
        if images is None:  # an idle step (no conversation left on this process)
            return real
        rounds = [len(imgs) - 1 for imgs in images]
        first = all(r == 0 for r in rounds)  # a new generation batch starts
        active = list(range(len(images))) if first else [r for r in seen[-1] if r % 2 == 0]
        seen.append(active)
        out = []
        for row, round_index in zip(active, rounds):
            text = script(row, round_index, lead_of(self.model))
            out.append(self._tokenizer.encode(text, add_special_tokens=False) + [self.eos_token_ids[0]])
        return out, None

    monkeypatch.setattr(GroundedGRPOTrainer, "_generate_single_turn", scripted)
    return seen


def world(tmp_path):
    from prefopt.data.synthetic import WorldSizes, write_world

    return write_world(tmp_path / "world", WorldSizes(1, 1, 1, 1, grounded=2), seed=0)["viscot.jsonl"]


def grounded_trainer(model_dir, family, tmp_path):
    from prefopt.grpo.config import load_recipe
    from prefopt.grpo.trainer import build_trainer

    short = "llava" if family == "llava" else "qwen"
    data = world(tmp_path)
    recipe = load_recipe(
        f"recipes/tiny/{short}_grounded_grpo.yaml",
        [
            f"model.name_or_path={model_dir}",
            f"data.path={data}",
            f"data.image_root={data.parent}",
            f"training.output_dir={tmp_path / 'run'}",
            "training.max_completion_length=24",
        ],
    )
    return build_trainer(recipe)


def _collapse(text: str, token: str) -> str:
    return re.sub(f"(?:{re.escape(token)})+", token, text)


def test_grounded_batch_masks_user_turns_and_images(family, tiny_model_dirs, tmp_path, scripted_rounds):
    trainer = grounded_trainer(tiny_model_dirs[family], family, tmp_path)
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in (0, 0, 1, 1)]
    out = trainer._generate_and_score_completions(rows)
    processor = inner_processor(trainer.processing_class)
    tokenizer, image_id = processor.tokenizer, image_token_id(processor)
    eos, lead = trainer.eos_token_ids[0], lead_of(trainer.model)
    image_size = rows[0]["images"][0].size
    size = trainer.adapter.input_size(rows[0]["images"][0])  # what the model sees (56 px -> 64 px on Qwen3-VL)

    assert out["num_images"] == [3, 1, 3, 1]  # original + one crop per non-final round
    policy_tokens = 0
    for b in range(4):
        ids, attend, loss = out["completion_ids"][b], out["completion_mask"][b], out["tool_mask"][b]
        real = attend.bool()
        images = (ids == image_id) & real
        # image tokens and user turns are attended to but never in the loss
        assert not loss[images].any()
        expected = []
        for r in range(3 if b % 2 == 0 else 1):
            expected += tokenizer.encode(script(b, r, lead), add_special_tokens=False) + [eos]
        assert ids[real & loss.bool()].tolist() == expected  # exactly the policy's turns
        policy_tokens += len(expected)
        user = real & ~loss.bool()
        assert user.any() == (b % 2 == 0)
        if b % 2 == 0:
            assert images.sum() > 0 and user.sum() > images.sum()  # crops + chat markup + follow-up text
    assert int(out["num_items_in_batch"]) == policy_tokens  # TRL normalises the loss by the masked count

    # the ids are the chat template's rendering of the whole conversation (image placeholders expanded)
    prompt = out["prompt_ids"][0][out["prompt_mask"][0].bool()]
    full = torch.cat([prompt, out["completion_ids"][0][out["completion_mask"][0].bool()]])
    messages = [grounded_fill(rows[0]["prompt"][0], size)]
    conv_images = [rows[0]["images"][0]]
    for r in range(3):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": script(0, r)}]})
        if r < 2:
            box = grounded.locate(script(0, r), size, image_size)
            messages.append(grounded.follow_up_message(box))
    rendered = processor.apply_chat_template(messages, tokenize=False)
    rendered = rendered[: rendered.rfind(tokenizer.eos_token) + len(tokenizer.eos_token)]
    decoded = tokenizer.decode(full.tolist(), skip_special_tokens=False)
    assert _collapse(decoded, processor.image_token) == rendered
    assert len(conv_images) == 1

    # every image reaches the loss forward: image tokens match the pixel tensors row by row
    grids = out.get("image_grid_thw")  # dynamic-resolution families
    if grids is not None:
        tokens_per_image = (grids.prod(-1) // 4).tolist()
        starts = [0, 3, 4, 7]
        for b, start in enumerate(starts):
            total = (out["prompt_ids"][b] == image_id).sum() + (out["completion_ids"][b] == image_id).sum()
            assert int(total) == sum(tokens_per_image[start : start + out["num_images"][b]])
        extra = GroundedRollout().model_kwargs(trainer, full[None], {})
        assert torch.equal(extra[trainer.adapter.modality_map_key][0].bool(), full == image_id)
    else:
        assert out["pixel_values"].shape[0] == 8
        per_image = int((prompt == image_id).sum())
        assert int((full == image_id).sum()) == 3 * per_image

    # rewards on the multi-round completions; metrics by hand
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["rewards/format/mean"] == pytest.approx(2.0)  # every round well formed: 2 · 1
    assert metrics["grounded/rounds"] == pytest.approx(2.0)  # (3 + 1 + 3 + 1) / 4
    assert metrics["grounded/answered"] == pytest.approx(1.0)
    assert metrics["grounded/box_rate"] == pytest.approx(0.5)
    assert metrics["grounded/rejected"] == pytest.approx(0.0)
    # boxes are rescaled from the input size to the 56 px original before scoring; odd rows wrote no box (0)
    scores = []
    for b in range(4):
        annotation = rows[b]["bboxs"]
        boxes = [grounded.rescale_box(raw, size, image_size) for raw in ((8, 8, 40, 40), (0, 0, 2, 2))]
        scores.append(0.0 if b % 2 else sum(max(giou_score(x, a) for a in annotation) for x in boxes) / 2)
    assert metrics["grounded/giou_score"] == pytest.approx(sum(scores) / 4, abs=1e-6)

    from prefopt.grpo.grounded_rollout import _PolicyGenerator

    assert _PolicyGenerator(trainer, processor, trainer.adapter)([]) == []  # an idle step of a finished process
    assert trainer.generation_config.max_new_tokens == 24

    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this test does not run
    loss = trainer.compute_loss(trainer.model, out)
    assert torch.isfinite(loss)
    loss.backward()


def grounded_fill(message, size=(56, 56)):
    return {
        **message,
        "content": [
            {**p, "text": grounded.fill_input_size(p["text"], *size)} if p.get("type") == "text" else p
            for p in message["content"]
        ],
    }


def test_cli_grounded_grpo_two_steps_logs_rounds_and_giou(
    family, tiny_model_dirs, tmp_path, scripted_rounds, param_spy, monkeypatch
):
    # Odd rows (one generation of every prompt) answer without <think>: format 0 against 2 inside each group,
    # so advantages are non-zero and the two steps must move every trainable parameter.
    boxed = script
    monkeypatch.setitem(globals(), "script", lambda row, r, lead="": lead + UNTHOUGHT if row % 2 else boxed(row, r, lead))
    data = world(tmp_path)
    out = tmp_path / "run"
    short = "llava" if family == "llava" else "qwen"
    rc = main(
        [
            "grpo",
            "--config",
            f"recipes/tiny/{short}_grounded_grpo.yaml",
            f"model.name_or_path={tiny_model_dirs[family]}",
            f"data.path={data}",
            f"data.image_root={data.parent}",
            "data.max_samples=2",
            "training.max_completion_length=24",
            f"training.output_dir={out}",
        ]
    )
    assert rc == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [row for row in history if "grounded/rounds" in row]
    assert len(steps) == 2
    for row in steps:
        assert row["grounded/rounds"] == pytest.approx(2.0)
        assert 0.0 < row["grounded/giou_score"] <= 0.5  # half the rollouts wrote boxes, half scored 0
        assert row["rewards/format/mean"] == pytest.approx(1.0)  # 2 for the boxed rows, 0 for UNTHOUGHT
        assert math.isfinite(row["loss"])
    assert_params_changed(param_spy.before, param_spy.model)
    assert_checkpoint_changed(out, tiny_model_dirs[family], len(param_spy.before))
