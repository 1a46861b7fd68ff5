"""The optional extras: a command whose extra is missing says which one to install, in one line,
before it does any work; and the controller's own commands never import them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from climatik.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def _hide(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Make `module` look uninstalled (a None entry in sys.modules means "not importable")."""
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)


def test_simulate_report_without_the_sim_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "matplotlib")
    # --hours 1000 would take minutes: the refusal must come before the run.
    code = main(["simulate", "--hours", "1000", "--report", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert "pip install 'climatik[sim]'" in err
    assert not (tmp_path / "r").exists()


def test_dev_cluster_up_without_the_dev_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "cryptography")
    code = main(["dev-cluster", "up", "--dir", str(tmp_path / "cp")])
    _out, err = capsys.readouterr()
    assert code == 1
    assert err.count("\n") == 1, err
    assert "pip install 'climatik[dev]'" in err


def test_plotting_certificates_and_ext_proc_are_extras_not_dependencies() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = " ".join(project["dependencies"])
    for extra_only in ("matplotlib", "cryptography", "envoy-data-plane"):
        assert extra_only not in required
    extras = project["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["sim"])
    assert any(d.startswith("cryptography") for d in extras["dev"])
    assert any(d.startswith("envoy-data-plane") for d in extras["router-extproc"])


def test_controller_commands_import_neither_extra() -> None:
    # A fresh interpreter: what `climatik run`'s and `gpu-tune`'s code paths import at start.
    probe = (
        "import sys, climatik.cli, climatik.runtime.manager, climatik.gputune.cli; "
        "print(sorted(m for m in ('matplotlib', 'cryptography', 'envoy_data_plane', 'grpclib') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.stdout.strip() == "[]"
