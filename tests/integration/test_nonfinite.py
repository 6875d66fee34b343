"""Non-finite steps: a NaN/inf loss or gradient skips the optimizer step (weights and Adam moments untouched),
is counted (``nonfinite_skipped``) and logged; too many in a row stop the run with a clear error while the
last good checkpoint stays resumable."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from prefopt.training.reliability import (
    NonFiniteError,
    ReliabilityCallback,
    ReliabilitySettings,
    grads_finite,
)
from tests.helpers import symmpo_args, write_symmpo_pairs


def _state(step=0, tmp_path=None):
    args = SimpleNamespace(device="cpu", output_dir=str(tmp_path or "."))
    return args, SimpleNamespace(global_step=step), SimpleNamespace()


def _model_with_grads(bad: float | None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    if bad is not None:
        model.weight.grad[0, 1] = bad
    return model


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_bad_gradient_skips_the_adam_step(bad, tmp_path):
    model = _model_with_grads(bad)
    assert not grads_finite(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    callback = ReliabilityCallback(ReliabilitySettings(max_consecutive_nonfinite=3))
    callback.on_pre_optimizer_step(*_state(0, tmp_path), model=model)
    optimizer.step()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert optimizer.state_dict()["state"] == {}  # no moment or step count was created
    assert callback.metrics() == {"nonfinite_skipped": 1.0, "nonfinite_consecutive": 1.0}


def test_finite_step_passes_and_resets_the_run_of_bad_steps(tmp_path):
    callback = ReliabilityCallback(ReliabilitySettings(max_consecutive_nonfinite=2))
    callback.on_pre_optimizer_step(*_state(0, tmp_path), model=_model_with_grads(float("nan")))
    good = _model_with_grads(None)
    callback.on_pre_optimizer_step(*_state(1, tmp_path), model=good)
    assert all(p.grad is not None for p in good.parameters())  # a finite step keeps its gradients
    assert callback.metrics() == {"nonfinite_skipped": 1.0, "nonfinite_consecutive": 0.0}


def test_non_finite_loss_with_finite_gradients_is_skipped(tmp_path):
    callback = ReliabilityCallback()
    callback.observe_loss(torch.tensor(float("nan")))
    model = _model_with_grads(None)
    callback.on_pre_optimizer_step(*_state(4, tmp_path), model=model)
    assert all(p.grad is None for p in model.parameters()) and callback.skipped == 1


def test_limit_raises_a_clear_error(tmp_path):
    callback = ReliabilityCallback(ReliabilitySettings(max_consecutive_nonfinite=2))
    callback.on_pre_optimizer_step(*_state(6, tmp_path), model=_model_with_grads(float("nan")))
    with pytest.raises(NonFiniteError, match=r"2 optimizer steps in a row \(steps 7-8\).*none saved yet"):
        callback.on_pre_optimizer_step(*_state(7, tmp_path), model=_model_with_grads(float("inf")))


@pytest.fixture
def nan_from_step(monkeypatch):
    """Make the SymMPO loss NaN on the given optimizer steps (1-based)."""
    from prefopt.dpo.trainer import SymMPOTrainer

    bad_steps: set[int] = set()
    original = SymMPOTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        return loss * float("nan") if self.state.global_step + 1 in bad_steps else loss

    monkeypatch.setattr(SymMPOTrainer, "compute_loss", poisoned)
    return bad_steps


def _adapter(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_symmpo_run_skips_a_nan_step(nan_from_step, tiny_qwen_dir, tmp_path, caplog):
    from prefopt.cli import main

    nan_from_step.add(2)
    data, out = write_symmpo_pairs(tmp_path), tmp_path / "run"
    caplog.set_level(logging.WARNING, logger="prefopt.training.reliability")
    args = symmpo_args(tiny_qwen_dir, data, out, "training.max_steps=3", "training.save_total_limit=null")
    assert main(args) == 0
    rows = {
        r["step"]: r
        for r in json.loads((out / "trainer_state.json").read_text())["log_history"]
        if "loss" in r
    }
    assert [rows[s]["nonfinite_skipped"] for s in (1, 2, 3)] == [0.0, 1.0, 1.0]
    assert math.isnan(rows[2]["grad_norm"]) and math.isfinite(rows[3]["grad_norm"])
    assert "step 2: non-finite loss or gradient, optimizer step skipped" in caplog.text
    one, two, three = (_adapter(out / f"checkpoint-{s}") for s in (1, 2, 3))
    assert all(torch.equal(one[k], two[k]) for k in one)  # the skipped step changed nothing
    assert any(not torch.equal(two[k], three[k]) for k in two)  # training went on afterwards


def test_symmpo_stops_after_too_many_nan_steps(nan_from_step, tiny_qwen_dir, tmp_path, capsys):
    from prefopt.cli import main
    from prefopt.training.common import last_checkpoint

    nan_from_step.update({2, 3, 4})
    data, out = write_symmpo_pairs(tmp_path), tmp_path / "run"
    args = symmpo_args(
        tiny_qwen_dir, data, out, "reliability.max_consecutive_nonfinite=2", "training.save_total_limit=null"
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "2 optimizer steps in a row (steps 2-3) had a non-finite loss or gradient; stopping" in err
    assert f"last good checkpoint: {out / 'checkpoint-2'}" in err
    assert last_checkpoint(out) == str(out / "checkpoint-2")
    assert not (out / "checkpoint-3").exists()
    one, two = _adapter(out / "checkpoint-1"), _adapter(out / "checkpoint-2")
    assert all(torch.equal(one[k], two[k]) for k in one)
