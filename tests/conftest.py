"""Shared fixtures: tiny random-init checkpoints of both families, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

FAMILIES = ("llava", "qwen2_5_vl")


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


@pytest.fixture(params=FAMILIES)
def tiny_dir(request, tiny_model_dirs):
    """Parametrised over both families."""
    return tiny_model_dirs[request.param]


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small synthetic shapes world (16 GRPO prompts, 16 SymMPO pairs) written by ``prefopt make-data``."""
    from prefopt.cli import main

    out = tmp_path_factory.mktemp("shapes")
    argv = ["make-data", "--out", str(out), "--train", "2", "--grpo", "16", "--preference", "16", "--eval", "2"]
    assert main(argv) == 0
    return out
