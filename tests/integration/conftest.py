"""Integration tier: every test collected under tests/integration/ carries ``pytest.mark.integration``."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefopt.cli import main

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Mark the items of this folder (the hook sees the whole session's items, so filter by path)."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small shapes world written by ``prefopt make-data`` (images under ``images/``) for front-door tests."""
    out = tmp_path_factory.mktemp("world")
    argv = ["make-data", "--out", str(out), "--train", "4", "--grpo", "4", "--preference", "4", "--eval", "2"]
    assert main(argv) == 0
    return out
