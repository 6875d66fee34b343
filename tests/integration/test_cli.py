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


def test_help_imports_no_torch_or_transformers():
    """`prefopt --help` stays fast: the commands keep heavy imports lazy, and so does what they load at start."""
    import subprocess
    import sys

    code = "import sys; from prefopt.cli import build_parser; build_parser(); print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
