"""Gradient accumulation in prefopt's SFT trainer: k accumulated micro-batches give the gradient of one batch.

The data is one conversation written twice, so a batch of 2 and two accumulated micro-batches of 1 have the
same mean loss and must give the same gradient; without explicit loss scaling ``Trainer`` skipped the
division by the accumulation steps for LLaVA (whose ``forward`` takes ``**kwargs``) and the gradient doubled.
"""

from __future__ import annotations

import json

import torch
from PIL import Image
from transformers import TrainerCallback

from prefopt.sft.config import load_recipe
from prefopt.sft.trainer import build_trainer


class _GradCapture(TrainerCallback):
    """Copies the accumulated gradients just before the first optimizer step."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.grads is None:
            self.grads = {
                n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None
            }


def _data(tmp_path):
    Image.new("RGB", (56, 56), (200, 40, 40)).save(tmp_path / "a.png")
    row = {
        "id": "r",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square?"},
            {"from": "gpt", "value": "The square is red."},
        ],
    }
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([row, {**row, "id": "r2"}]))
    return path


def _grads(model_dir, data, out, batch, accumulation):
    recipe = load_recipe(
        "recipes/tiny/llava_sft.yaml",
        [
            f"model.name_or_path={model_dir}",
            f"data.path={data}",
            f"data.image_root={data.parent}",
            f"training.output_dir={out}",
            f"training.per_device_train_batch_size={batch}",
            f"training.gradient_accumulation_steps={accumulation}",
            "training.max_grad_norm=0",
            "training.max_steps=1",
        ],
    )
    trainer = build_trainer(recipe)
    capture = _GradCapture(trainer.model)
    trainer.add_callback(capture)
    trainer.train()
    return capture.grads


def test_sft_accumulated_gradient_equals_single_batch(tiny_llava_dir, tmp_path):
    data = _data(tmp_path)
    single = _grads(tiny_llava_dir, data, tmp_path / "a", batch=2, accumulation=1)
    accumulated = _grads(tiny_llava_dir, data, tmp_path / "b", batch=1, accumulation=2)
    assert single and single.keys() == accumulated.keys()
    for name, grad in single.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_every_mean_loss_trainer_states_its_scaling():
    """SFT and SymMPO return per-micro-batch means: both take the one explicit rule (GRPO's loss is TRL's)."""
    from prefopt.dpo.trainer import SymMPOTrainer
    from prefopt.sft.trainer import ConversationSFTTrainer
    from prefopt.training.loss_scaling import MeanLossTrainerMixin

    assert issubclass(ConversationSFTTrainer, MeanLossTrainerMixin)
    assert issubclass(SymMPOTrainer, MeanLossTrainerMixin)
