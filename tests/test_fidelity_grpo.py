"""Seed parity of the GRPO core (issue 16, item 8): loss aggregation, KL log-ratio clamp, top-k sampling.

Seed rules (omniAI-Lab/Ground-What-You-See RL-OURS and zzzhhzzz/Ground-R1 ``trainer/grpo_trainer.py``):
``x = clamp(ref_logp - logp, -10, 10)``, ``KL = e^x - x - 1``; loss = per-sequence mean of token losses,
then batch mean (TRL ``loss_type: grpo``); sampling through a ``GenerationConfig`` that leaves transformers'
``top_k`` default of 50.
"""

from __future__ import annotations

import math

import pytest
import torch

from prefopt.grpo.config import GRPORecipe, default_training, load_recipe


def test_clamped_reference_gives_the_seed_kl_value_and_gradient():
    """x = ref - logp = (-12, 0.5, 11) -> clamped (-10, 0.5, 10).

    k3(-10) = e^-10 + 10 - 1 = 9.0000454, k3(0.5) = e^0.5 - 1.5 = 0.1487213, k3(10) = e^10 - 11 = 22015.466.
    d k3(clamp x) / d logp = -(e^x - 1) inside the range (-0.6487213 at x = 0.5), 0 where the clamp bites.
    """
    from prefopt.grpo.kl import clamped_reference, k3

    logp = torch.tensor([[-1.0, -2.0, -13.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-13.0, -1.5, -2.0]], dtype=torch.float64)
    ref_prime = clamped_reference(logp, ref, 10.0)
    trl_kl = torch.exp(ref_prime - logp) - (ref_prime - logp) - 1  # TRL 1.16's formula, fed ref'
    expected = [math.exp(-10) + 9, math.exp(0.5) - 1.5, math.exp(10) - 11]
    assert trl_kl.detach()[0].tolist() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx([9.0000454, 0.1487213, 22015.466], rel=1e-6)
    trl_kl.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, -(math.exp(0.5) - 1), 0.0], abs=1e-12)
    seed_logp = logp.detach().clone().requires_grad_(True)
    k3(torch.clamp(ref - seed_logp, -10, 10)).sum().backward()  # the seed's own expression
    assert torch.allclose(seed_logp.grad, logp.grad, atol=1e-12)
    with pytest.raises(ValueError):
        clamped_reference(logp, ref, 0.0)


def test_defaults_are_the_seed_runs():
    assert default_training()["loss_type"] == "grpo"
    assert default_training()["top_k"] == 50
    assert GRPORecipe().kl_clamp == 10.0


@pytest.mark.parametrize("name", [
    "gwys/qwen2_5_vl_7b_grpo.yaml", "gwys/qwen2_5_vl_7b_grpo_baseline.yaml", "gwys/qwen2_5_vl_7b_grpo_vllm.yaml",
    "ground_r1/qwen2_5_vl_7b_grpo.yaml",
])
def test_seed_recipes_state_loss_clamp_and_top_k(name):
    recipe = load_recipe(f"recipes/{name}")
    args = recipe.training_args()
    assert args["loss_type"] == "grpo" and args["top_k"] == 50 and recipe.kl_clamp == 10.0
    assert "loss_type" in recipe.training and "top_k" in recipe.training  # written out, not only inherited
    text = open(f"recipes/{name}").read()
    assert "kl_clamp: 10.0" in text


def test_kl_clamp_is_validated():
    from prefopt.config import ConfigError

    with pytest.raises(ConfigError, match="kl_clamp"):
        load_recipe("recipes/tiny/qwen_grpo.yaml", ["kl_clamp=0"])
    assert load_recipe("recipes/tiny/qwen_grpo.yaml", ["kl_clamp=null"]).kl_clamp is None
