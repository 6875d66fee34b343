"""Unit tests of the SymMPO / DPO / mDPO losses against hand-computed numbers and TRL's sigmoid DPO."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from prefopt.dpo.losses import dpo_loss, loss_keys, mdpo_loss, preference_loss, symmpo_loss

KEYS = ("1w", "1l", "12", "2w", "22")


def _nls(x: float) -> float:
    """-log σ(x) = log(1 + e^-x), written out by hand."""
    return math.log1p(math.exp(-x))


def _worked_example():
    policy = {k: torch.tensor([v], dtype=torch.float64) for k, v in zip(KEYS, (-1.0, -3.0, -2.0, -4.0, -1.0))}
    reference = {k: torch.zeros(1, dtype=torch.float64) for k in KEYS}
    return policy, reference


def test_symmpo_worked_example():
    policy, reference = _worked_example()
    loss, metrics = symmpo_loss(policy, reference)
    # h0 = 2, h1 = 1, h2 = 3 (see the docstring of symmpo_loss)
    expected = _nls(0.2) + 0.5 * (_nls(0.1) + _nls(0.3)) + 1e-4 * 4 + 2 * _nls(-0.1)
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert loss.item() == pytest.approx(2.686708, abs=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(0.2)
    assert metrics["rewards/pair_image_margins"].item() == pytest.approx(0.1)
    assert metrics["rewards/pair_contrastive_margins"].item() == pytest.approx(0.3)
    assert metrics["loss/consistency"].item() == pytest.approx(4e-4)
    assert metrics["rewards/accuracies"].item() == 1.0


def test_gamma_on_scaled_and_delta():
    policy, reference = _worked_example()
    loss, _ = symmpo_loss(policy, reference, gamma=0.5, gamma_on_scaled=True, delta=0.3, beta_anchor=0.2)
    # consistency 0.5·(0.1 - 0.3)² = 0.02; anchors -logσ(-0.1 - 0.3) - logσ(0.2·(-1) - 0.3)
    expected = _nls(0.2) + 0.5 * (_nls(0.1) + _nls(0.3)) + 0.5 * 0.04 + _nls(-0.4) + _nls(-0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def test_batch_mean_and_reference_subtraction():
    policy = {"1w": torch.tensor([-1.0, -5.0]), "1l": torch.tensor([-3.0, -2.0])}
    reference = {"1w": torch.tensor([-2.0, -5.0]), "1l": torch.tensor([-2.0, -1.0])}
    loss, metrics = dpo_loss(policy, reference, beta=0.1)
    # row 0: d1w = 1, d1l = -1 → h0 = 2; row 1: d1w = 0, d1l = -1 → h0 = 1
    assert loss.item() == pytest.approx((_nls(0.2) + _nls(0.1)) / 2, abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.05)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.1)


def test_mdpo_worked_example():
    policy, reference = _worked_example()
    loss, metrics = mdpo_loss(policy, reference)
    assert loss.item() == pytest.approx(_nls(0.2) + _nls(0.3) + _nls(-0.1), abs=1e-9)
    assert loss.item() == pytest.approx(1.896891, abs=1e-6)
    assert metrics["rewards/image_margins"].item() == pytest.approx(0.3)
    # mDPO never reads the 12 / 22 sequences
    only = {k: policy[k] for k in loss_keys("mdpo")}
    assert mdpo_loss(only, reference)[0].item() == pytest.approx(loss.item())


def test_dpo_is_a_setting_of_symmpo():
    policy, reference = _worked_example()
    general, _ = symmpo_loss(policy, reference, lam=0.0, gamma=0.0, eta=0.0)
    assert general.item() == pytest.approx(dpo_loss(policy, reference)[0].item())
    mdpo_general, _ = preference_loss(policy, reference, lam=0, gamma=0, eta=1, mu=1, anchor_contrastive=False)
    assert mdpo_general.item() == pytest.approx(mdpo_loss(policy, reference)[0].item())


def test_missing_key_is_named():
    policy = {"1w": torch.zeros(1), "1l": torch.zeros(1)}
    with pytest.raises(KeyError, match="12"):
        symmpo_loss(policy, policy)


@pytest.mark.parametrize("fn", [symmpo_loss, dpo_loss, mdpo_loss])
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_gradients_finite_for_extreme_log_ratios(fn, scale):
    gen = torch.Generator().manual_seed(0)
    policy = {k: (scale * torch.randn(4, generator=gen)).requires_grad_() for k in KEYS}
    reference = {k: torch.zeros(4) for k in KEYS}
    loss, _ = fn(policy, reference)
    loss.backward()
    assert torch.isfinite(loss)
    for k in loss_keys({symmpo_loss: "symmpo", dpo_loss: "dpo", mdpo_loss: "mdpo"}[fn]):
        assert policy[k].grad is not None and torch.isfinite(policy[k].grad).all()


def _trl_sigmoid_loss(chosen, rejected, ref_chosen, ref_rejected, beta):
    """Run TRL 1.16's ``DPOTrainer._compute_loss`` (sigmoid) on fixed sequence log-probs.

    A stand-in model returns per-token log-probs whose sums are the given values, so TRL's own code
    computes the loss from the same numbers ours sees.
    """
    from collections import defaultdict

    from trl import DPOTrainer

    b = chosen.shape[0]
    logps = torch.stack([torch.cat([chosen, rejected]), torch.zeros(2 * b)], dim=1)  # [2B, 2]: one real token

    class FakeModel:
        training = True

        def __call__(self, **kwargs):
            shape = logps.shape
            return SimpleNamespace(log_probs=logps, entropy=torch.zeros(shape), mean_logits=torch.zeros(shape),
                                   is_top1=torch.zeros(shape, dtype=torch.bool))

    model = FakeModel()
    fake = SimpleNamespace(
        model=model, accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=0.0,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    completion_mask = torch.tensor([[0, 1, 0]] * (2 * b))
    inputs = {"input_ids": torch.zeros(2 * b, 3, dtype=torch.long), "attention_mask": torch.ones(2 * b, 3),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    return DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)


def test_dpo_matches_trl_sigmoid_loss():
    gen = torch.Generator().manual_seed(1)
    values = [torch.randn(5, generator=gen, dtype=torch.float64) * 20 for _ in range(4)]
    chosen, rejected, ref_chosen, ref_rejected = values
    ours, metrics = dpo_loss({"1w": chosen, "1l": rejected}, {"1w": ref_chosen, "1l": ref_rejected}, beta=0.3)
    theirs = _trl_sigmoid_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.3)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-9)
    expected_margin = (0.3 * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean().item()
    assert metrics["rewards/margins"].item() == pytest.approx(expected_margin, abs=1e-5)
