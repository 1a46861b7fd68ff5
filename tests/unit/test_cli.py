"""The command line answers --version and --help without touching a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import structlog

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


def test_every_subcommand_logs_tracebacks_without_frame_locals(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Not only `run`: structlog's default renders every frame's locals, and a subcommand such
    as `explain` or `gpu-tune` may hold an API key or a token in one when something raises."""
    assert main(["crd", "-o", str(tmp_path / "crd.yaml")]) == 0

    def leaky() -> None:
        api_key = "sk-secret-value-123"  # noqa: F841 - the local a traceback must not show
        raise RuntimeError("boom")

    try:
        leaky()
    except RuntimeError:
        structlog.get_logger("test").exception("failed")
    err = capsys.readouterr().err
    assert "boom" in err
    assert "sk-secret-value-123" not in err
