"""prefopt/_trl_compat.py: the TRL range and private-member checks, and the state it changes is restored."""

from __future__ import annotations

import logging
import tomllib
from types import SimpleNamespace

import pytest
from PIL import Image
from transformers import GenerationConfig
from trl import GRPOTrainer

from prefopt import _trl_compat as compat
from prefopt.grpo.grounded_rollout import GroundedRollout
from tests.helpers import ROOT


def test_installed_trl_fits_and_pyproject_pins_the_supported_range():
    compat.check_trl()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"trl{','.join(compat.SUPPORTED_TRL)}" in deps


def test_check_names_a_missing_member_and_the_range():
    class Old(GRPOTrainer):
        _generate_single_turn = None  # as if TRL had renamed it

    with pytest.raises(compat.TRLCompatError, match=r"_generate_single_turn is missing") as err:
        compat.check_trl(Old)
    assert "trl>=1.16,<1.17" in str(err.value)


def test_check_names_a_changed_signature():
    class Changed(GRPOTrainer):
        def _generate_single_turn(self, prompts, num_generations):  # the old prompt-text signature
            return None

    with pytest.raises(compat.TRLCompatError, match=r"_generate_single_turn.*no longer starts with"):
        compat.check_trl(Changed)


def test_a_fitting_but_untested_version_only_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="prefopt._trl_compat"):
        compat.check_trl(GRPOTrainer, version="1.17.0")
    assert "untested TRL version" in caplog.text


def _fake_trainer(suppress):
    return SimpleNamespace(generation_config=GenerationConfig(suppress_tokens=suppress, max_new_tokens=9))


def test_suppressed_tokens_and_generation_limit_restore_the_config_even_on_error():
    trainer = _fake_trainer([3])
    with pytest.raises(RuntimeError), compat.suppressed_tokens(trainer, [7, None, 3]):
        assert trainer.generation_config.suppress_tokens == [3, 7]
        raise RuntimeError("generation failed")
    assert trainer.generation_config.suppress_tokens == [3]
    empty = _fake_trainer(None)
    with compat.suppressed_tokens(empty, [7]), compat.generation_limit(empty, 1):
        assert empty.generation_config.suppress_tokens == [7] and empty.generation_config.max_new_tokens == 1
    assert empty.generation_config.suppress_tokens is None and empty.generation_config.max_new_tokens == 9


def test_swapped_processor_is_restored():
    trainer = SimpleNamespace(processing_class="processor")
    with pytest.raises(ValueError), compat.swapped_processor(trainer, "wrapper") as saved:
        assert trainer.processing_class == "wrapper" and saved == "processor"
        raise ValueError
    assert trainer.processing_class == "processor"


def test_grounded_rollout_restores_suppress_tokens():
    """Ground-R1 blocks the image placeholders while it generates; the trainer's own list comes back after,
    also when a round fails (before: the placeholders stayed suppressed for every later generation)."""
    seen = []

    def tokenize(prompts):
        seen.append(list(trainer.generation_config.suppress_tokens))
        raise RuntimeError("stop after the first step")

    adapter = SimpleNamespace(image_token_ids=[11, None], input_size=lambda image: (28, 28))
    trainer = SimpleNamespace(generation_config=GenerationConfig(suppress_tokens=[2]), adapter=adapter,
                              processing_class=None, tokenize_prompts=tokenize)
    prompt = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (8, 8))},
                                            {"type": "text", "text": "where?"}]}]
    with pytest.raises(RuntimeError, match="first step"):
        GroundedRollout().generate(trainer, [prompt])
    assert seen == [[2, 11]] and trainer.generation_config.suppress_tokens == [2]


def test_check_names_an_attribute_trl_no_longer_sets():
    class Renamed(GRPOTrainer):
        def __init__(self):  # sets neither of the private attributes prefopt reads
            self.metrics = {}

    with pytest.raises(compat.TRLCompatError, match=r"no longer sets \['_metrics', '_entropy_bonus_enabled'\]"):
        compat.check_trl(Renamed)
