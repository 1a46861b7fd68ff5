"""The chart's README is generated from its values.yaml (hack/chart_readme.py) and up to date."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "climatik"
SCRIPT = REPO_ROOT / "hack" / "chart_readme.py"


def _check(chart: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--chart", str(chart), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _leaves(values: object, prefix: str = "") -> set[str]:
    """Every key path whose value is not a map with keys of its own."""
    if not isinstance(values, dict) or not values:
        return {prefix}
    found: set[str] = set()
    for key, value in values.items():
        found |= _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def test_chart_readme_is_generated_from_the_current_values() -> None:
    result = _check(CHART)
    assert result.returncode == 0, result.stderr


def test_every_value_has_a_row_with_its_default() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if "| `" in line}
    # A leaf is either its own row or inside a row of its parent (a flow-style map).
    missing = {
        leaf
        for leaf in _leaves(values)
        if not any(leaf == row or leaf.startswith(f"{row}.") for row in rows)
    }
    assert not missing, sorted(missing)
    assert "| `controller.replicas` | int | `2` |" in readme
    assert "`serviceMonitor.labels` | map | `{}` | Labels your Prometheus selects" in readme


def test_an_edited_value_makes_the_readme_stale(tmp_path: Path) -> None:
    chart = tmp_path / "climatik"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(
        values.read_text(encoding="utf-8").replace("  replicas: 2\n", "  replicas: 3\n", 1),
        encoding="utf-8",
    )
    result = _check(chart)
    assert result.returncode == 1
    assert "hack/chart_readme.py" in result.stderr
