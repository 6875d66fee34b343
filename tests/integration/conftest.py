"""Integration tier: every test collected under tests/integration/ carries ``pytest.mark.integration``."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Mark the items of this folder (the hook sees the whole session's items, so filter by path)."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
