"""`--loss ipo` end to end: the loss table row alone makes it trainable (prefopt/dpo/losses.py)."""

from __future__ import annotations

import json

import pytest

from prefopt.cli import main
from tests.helpers import ROOT, assert_params_changed, write_symmpo_pairs


def test_ipo_trains_end_to_end_on_tiny_llava(tiny_llava_dir, tmp_path, param_spy):
    """`--loss ipo` needs nothing but its table row: the collator builds 1w/1l, the trainer binds β.

    Step 1: the policy is its own (cached) reference, so h0 = 0 and the loss is (0 - 1/(2·0.1))² = 25.
    """
    recipe = ROOT / "recipes/tiny/llava_symmpo.yaml"
    data = write_symmpo_pairs(tmp_path, n=4)
    out = tmp_path / "ipo"
    assert main(["symmpo", "--config", str(recipe), f"model.name_or_path={tiny_llava_dir}", f"data.path={data}",
                 f"training.output_dir={out}", f"reference_cache_dir={tmp_path / 'cache'}", "--loss", "ipo",
                 "loss.beta=0.1"]) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    first, second = [row for row in history if "loss" in row]
    assert first["loss/ipo"] == pytest.approx(25.0, abs=1e-3) and abs(first["rewards/margins"]) < 1e-5
    assert second["rewards/margins"] > 0  # the squared loss pulls h0 up towards 1/(2β) = 5
    assert_params_changed(param_spy.before, param_spy.model)
