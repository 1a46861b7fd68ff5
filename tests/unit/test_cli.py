"""The command line answers --version and --help without touching a cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest

from climatik import __version__
from climatik.cli import main


def test_version_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"climatik {__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: climatik" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_program() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "climatik", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "usage: climatik" in completed.stdout
