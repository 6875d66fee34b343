"""The README's CPU tour runs top to bottom, as written, in a fresh folder (``scripts/readme_tour.sh``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path):
    env = {**os.environ, "PREFOPT_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "readme_tour.sh"), str(tmp_path / "tour")], env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "every command ran" in result.stdout
    assert (tmp_path / "tour" / "reports" / "tiny").is_dir()
    assert (tmp_path / "tour" / "answers.jsonl").read_text().count("\n") == 2


def test_readme_tour_block_is_found():
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- cpu-tour -->") >= 1 and "prefopt tiny-model" in text.split("<!-- cpu-tour -->")[1]
