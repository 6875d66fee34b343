"""Shared fixtures: tiny random-init checkpoints of every registered family, built once per test session.

The families come from the model registry (:data:`FAMILIES`); a test that takes a ``family`` argument and does
not parametrise it itself runs once per family (``pytest_generate_tests``), so a new family joins the suite
without test edits. Run one family with ``-k qwen3_vl``.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

from prefopt.models.tiny import TINY_FAMILIES  # noqa: E402  (after the offline switches above)

#: Every registered family with a tiny builder, in registry order.
FAMILIES: tuple[str, ...] = TINY_FAMILIES


def pytest_generate_tests(metafunc):
    """Run tests that take ``family`` once per registered family unless they parametrise it themselves."""
    if "family" in metafunc.fixturenames and not any(
        "family" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")
    ):
        metafunc.parametrize("family", FAMILIES)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """``{family: path}`` of tiny checkpoints saved with ``prefopt.models.tiny.build_tiny``."""
    from prefopt.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny(family, root / family, seed=0) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_qwen_dir(tiny_model_dirs):
    return tiny_model_dirs["qwen2_5_vl"]


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_model_dirs):
    return tiny_model_dirs["llava"]


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tiny_model_dirs):
    return tiny_model_dirs["qwen3_vl"]


@pytest.fixture(params=FAMILIES)
def tiny_dir(request, tiny_model_dirs):
    """Parametrised over every registered family."""
    return tiny_model_dirs[request.param]


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small synthetic shapes world (16 GRPO prompts, 16 SymMPO pairs) written by ``prefopt make-data``."""
    from prefopt.cli import main

    out = tmp_path_factory.mktemp("shapes")
    argv = ["make-data", "--out", str(out), "--train", "2", "--grpo", "16", "--preference", "16", "--eval", "2"]
    assert main(argv) == 0
    return out


@pytest.fixture
def scripted_policy(monkeypatch):
    """Every other GRPO completion is a well-formed four-stage answer, so rewards vary and the judge gets captions."""
    from prefopt.grpo.trainer import GroundedGRPOTrainer
    from tests.helpers import CANNED

    original = GroundedGRPOTrainer._generate_single_turn

    def scripted(self, *args, **kwargs):
        ids, logprobs = original(self, *args, **kwargs)
        canned = self._tokenizer.encode(CANNED, add_special_tokens=False) + [self.eos_token_ids[0]]
        return [canned if i % 2 == 0 else c for i, c in enumerate(ids)], logprobs

    monkeypatch.setattr(GroundedGRPOTrainer, "_generate_single_turn", scripted)


class ParamSpy:
    """What every ``Trainer.train`` call of a test trained: trainable parameters before, the model after."""

    def __init__(self):
        self.runs: list[tuple[dict, object]] = []

    @property
    def before(self) -> dict:
        assert self.runs, "no Trainer.train call was seen"
        return self.runs[-1][0]

    @property
    def model(self):
        return self.runs[-1][1]


@pytest.fixture
def param_spy(monkeypatch):
    """Record each trainer's trainable parameters just before ``Trainer.train`` (for ``assert_params_changed``)."""
    import transformers

    from tests.helpers import snapshot_params

    spy = ParamSpy()
    original = transformers.Trainer.train

    def train(self, *args, **kwargs):
        before = snapshot_params(self.model)
        result = original(self, *args, **kwargs)
        spy.runs.append((before, self.model))
        return result

    monkeypatch.setattr(transformers.Trainer, "train", train)
    return spy
