"""The console script: discovery of subcommands, help text, and one-line user errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prefopt import cli


def test_every_command_has_help_and_a_description(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no subcommands discovered"
    for name, subparser in sub.choices.items():
        assert subparser.description, f"{name} has no description"
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0
        assert name in capsys.readouterr().out


def test_top_level_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "prefopt.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: prefopt" in out.stdout and "COMMAND" in out.stdout


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: prefopt" in capsys.readouterr().out
