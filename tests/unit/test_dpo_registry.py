"""The loss table drives config validation, the CLI choices, the trainer's loss and the collator's sequences;
IPO is entered there alone (prefopt/dpo/losses.py) and checked against hand-computed values."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from prefopt.config import ConfigError, from_dict
from prefopt.dpo.collator import KEY_PARTS
from prefopt.dpo.config import LossSettings, SymMPOConfig
from prefopt.dpo.losses import LOSS_KEYS, LOSSES, dpo_loss, get_loss, ipo_loss, loss_keys, loss_names
from prefopt.dpo.trainer import make_loss_fn


def _pair(chosen, rejected, ref_chosen=0.0, ref_rejected=0.0):
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    policy = {"1w": t(*chosen), "1l": t(*rejected)}
    reference = {"1w": t(*[ref_chosen] * len(chosen)), "1l": t(*[ref_rejected] * len(rejected))}
    return policy, reference


def test_ipo_worked_example():
    # docstring of ipo_loss: h0 = -1 - (-3) = 2; β = 0.1 → (2 - 5)² = 9; β = 0.5 → (2 - 1)² = 1
    policy, reference = _pair([-1.0], [-3.0])
    loss, metrics = ipo_loss(policy, reference)
    assert loss.item() == pytest.approx(9.0)
    assert ipo_loss(policy, reference, beta=0.5)[0].item() == pytest.approx(1.0)
    assert metrics["rewards/margins"].item() == pytest.approx(0.2)
    assert metrics["loss/ipo"].item() == pytest.approx(9.0)


def test_ipo_batch_mean_and_reference():
    # row 0: policy (-1, -3), reference (-2, -2) → d = (1, -1), h0 = 2 → (2 - 5)² = 9
    # row 1: policy (-5, -2), reference (-2, -2) → d = (-3, 0), h0 = -3 → (-3 - 5)² = 64; mean 36.5
    policy = {"1w": torch.tensor([-1.0, -5.0]), "1l": torch.tensor([-3.0, -2.0])}
    reference = {"1w": torch.tensor([-2.0, -2.0]), "1l": torch.tensor([-2.0, -2.0])}
    loss, metrics = ipo_loss(policy, reference)
    assert loss.item() == pytest.approx(36.5)
    assert metrics["rewards/accuracies"].item() == pytest.approx(0.5)


def test_ipo_gradient_is_zero_at_the_target_margin():
    # dL/dh0 = 2(h0 - 1/(2β)): zero at h0 = 1/(2β) = 5, unlike DPO which always pushes the margin up
    policy = {"1w": torch.tensor([2.0], requires_grad=True), "1l": torch.tensor([-3.0], requires_grad=True)}
    reference = {"1w": torch.zeros(1), "1l": torch.zeros(1)}
    ipo_loss(policy, reference)[0].backward()
    assert policy["1w"].grad.item() == pytest.approx(0.0)
    assert dpo_loss({k: v.detach() for k, v in policy.items()}, reference)[0].item() == pytest.approx(
        math.log1p(math.exp(-0.5)))


def test_table_rows():
    assert loss_names()[:3] == ("symmpo", "dpo", "mdpo") and "ipo" in loss_names()
    spec = get_loss("ipo")
    assert spec.fn is ipo_loss and spec.keys == ("1w", "1l") and dict(spec.params) == {"beta": 0.1}
    assert dict(get_loss("mdpo").params) == {"beta": 0.1, "eta": 1.0, "delta": 0.0, "mu": 1.0}
    assert LOSS_KEYS == {name: spec.keys for name, spec in LOSSES.items()}
    assert loss_keys("symmpo") == ("1w", "1l", "12", "2w", "22")
    with pytest.raises(ValueError, match="choose one of"):
        get_loss("ppo")


@pytest.mark.parametrize("name", loss_names())
def test_every_loss_is_configurable_and_buildable(name):
    """Each parameter is a ``loss:`` field with the function's default, and each key a collator sequence."""
    spec = get_loss(name)
    fields = {f.name: f.default for f in dataclasses.fields(LossSettings)}
    for param, default in spec.params.items():
        assert param in fields, f"loss {name}: parameter {param} has no loss.{param} field"
        assert fields[param] == default, f"loss {name}: loss.{param} default {fields[param]} != {default}"
    assert set(spec.keys) <= set(KEY_PARTS)


def test_config_validates_names_from_the_table():
    assert from_dict(SymMPOConfig, {"loss": {"name": "ipo"}}).loss.name == "ipo"
    with pytest.raises(ConfigError, match=r"loss\.name 'ppo'.*ipo"):
        from_dict(SymMPOConfig, {"loss": {"name": "ppo"}})


def test_trainer_binds_the_recipe_weights():
    settings = LossSettings(name="ipo", beta=0.5)
    policy, reference = _pair([-1.0], [-3.0])
    assert make_loss_fn(settings)(policy, reference)[0].item() == pytest.approx(1.0)


def test_cli_choices_come_from_the_table():
    from prefopt.cli import build_parser

    args = build_parser().parse_args(["symmpo", "--loss", "ipo"])
    assert args.loss == "ipo"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["symmpo", "--loss", "ppo"])
