"""Every recipe under ``recipes/tiny/`` runs as written: its ``# setup:`` lines, then its first line, verbatim.

Each recipe's header is the documentation a user follows: line 1 is the command, ``# setup: …`` lines are
what must run before it (a tiny model, the shapes world, the local judge). The commands run through a shell
in a fresh folder that holds only a ``recipes`` link, with ``prefopt`` on the PATH pointing at this checkout,
so a relative path, a missing file or an unstarted server fails the test exactly as it would fail a user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes" / "tiny").glob("*.yaml"))
SETUP = "# setup: "


def header(path: Path) -> tuple[str, list[str]]:
    """The recipe's first-line command and its setup commands."""
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    assert lines[0].startswith("# prefopt ") or lines[0].startswith("# accelerate "), lines[0]
    return lines[0][2:], [line[len(SETUP):] for line in comments if line.startswith(SETUP)]


def test_every_tiny_recipe_documents_its_command():
    for path in RECIPES:
        command, setup = header(path)
        assert f"recipes/tiny/{path.name}" in command, path
        assert any("tiny-model" in s for s in setup), f"{path.name}: no setup line makes the model"
        if "judge.base_url" in command:
            assert any("judge serve" in s for s in setup), f"{path.name}: nothing starts the judge"


class Workspace:
    """A fresh folder with ``recipes`` linked in and a ``prefopt`` shim; runs each setup line once."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "recipes").symlink_to(ROOT / "recipes")
        bin_dir = folder / ".bin"
        bin_dir.mkdir()
        shim = bin_dir / "prefopt"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m prefopt.cli "$@"\n')
        shim.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false"}
        self.done: set[str] = set()
        self.background: list[subprocess.Popen] = []

    def sh(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(command, shell=True, cwd=self.folder, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def setup(self, command: str) -> None:
        if command in self.done:
            return
        if command.rstrip().endswith("&"):
            self._start_server(command.rstrip()[:-1].strip())
        else:
            result = self.sh(command)
            assert result.returncode == 0, f"setup `{command}` failed:\n{result.stderr[-3000:]}"
        self.done.add(command)

    def _start_server(self, command: str) -> None:
        proc = subprocess.Popen(command, shell=True, cwd=self.folder, env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.background.append(proc)
        port = command.split("--port", 1)[1].split()[0] if "--port" in command else "8765"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`{command}` exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"`{command}` did not answer on port {port} within 60 s")

    def close(self) -> None:
        for proc in self.background:  # only the servers this fixture started, by their own session
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("recipes"))
    yield ws
    ws.close()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_first_line_runs_as_written(workspace, recipe):
    command, setup = header(recipe)
    for line in setup:
        workspace.setup(line)
    result = workspace.sh(command)
    assert result.returncode == 0, f"`{command}` failed ({result.returncode}):\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
