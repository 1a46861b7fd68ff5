"""Locating the built control plane and KEDA add-on: the environment's paths, then the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from climatik.devcluster import binaries
from climatik.devcluster.binaries import (
    BINARIES,
    ENV_BIN_DIR,
    ENV_CRD_DIR,
    ENV_KEDA_BIN_DIR,
    ENV_KEDA_CRD_DIR,
    ENV_KEDA_RBAC_DIR,
    ENV_KWOK_STAGES,
    KEDA_BINARIES,
    BinariesMissingError,
    ControlPlaneBinaries,
    KedaBinaries,
    locate_binaries,
    locate_keda,
)

ALL_ENV = (
    ENV_BIN_DIR,
    ENV_CRD_DIR,
    ENV_KWOK_STAGES,
    ENV_KEDA_BIN_DIR,
    ENV_KEDA_CRD_DIR,
    ENV_KEDA_RBAC_DIR,
)


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)


def _executables(folder: Path, names: tuple[str, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)


def _manifest(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.yaml").write_text("kind: X\n")


def test_the_control_plane_is_found_under_its_bin_dir_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "v1-abc"
    _executables(bin_dir, BINARIES)
    _manifest(bin_dir / "crds")
    (bin_dir / "kwok-stages.yaml").write_text("stages: []\n")
    monkeypatch.setenv(ENV_BIN_DIR, str(bin_dir))
    assert locate_binaries() == ControlPlaneBinaries(
        bin_dir=bin_dir,
        crd_dir=bin_dir / "crds",
        kwok_stages=bin_dir / "kwok-stages.yaml",
        version_set="v1-abc",
    )


def test_keda_takes_each_folder_from_its_own_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _executables(tmp_path / "keda-1", KEDA_BINARIES)
    _manifest(tmp_path / "elsewhere-crds")
    _manifest(tmp_path / "keda-1" / "rbac")
    monkeypatch.setenv(ENV_KEDA_BIN_DIR, str(tmp_path / "keda-1"))
    monkeypatch.setenv(ENV_KEDA_CRD_DIR, str(tmp_path / "elsewhere-crds"))
    assert locate_keda() == KedaBinaries(
        bin_dir=tmp_path / "keda-1",
        crd_dir=tmp_path / "elsewhere-crds",
        rbac_dir=tmp_path / "keda-1" / "rbac",
        version_set="keda-1",
    )


def test_what_is_not_built_is_named_with_the_command_that_builds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_BIN_DIR, str(tmp_path / "cp"))
    monkeypatch.setenv(ENV_KEDA_BIN_DIR, str(tmp_path / "keda"))
    script = binaries.BUILD_SCRIPT
    with pytest.raises(BinariesMissingError) as control_plane:
        locate_binaries()
    missing = ", ".join(
        [*BINARIES, str(tmp_path / "cp" / "kwok-stages.yaml"), f"{tmp_path / 'cp' / 'crds'}/*.yaml"]
    )
    assert str(control_plane.value) == (
        f"control plane cp is not built (missing: {missing}); "
        f"run `bash {script}` (the first build takes 20+ minutes on 2 cores)"
    )
    with pytest.raises(BinariesMissingError) as keda:
        locate_keda()
    missing = ", ".join(
        [
            *KEDA_BINARIES,
            f"{tmp_path / 'keda' / 'crds'}/*.yaml",
            f"{tmp_path / 'keda' / 'rbac'}/*.yaml",
        ]
    )
    assert str(keda.value) == (
        f"KEDA keda is not built (missing: {missing}); run `bash {script} --with keda` "
        "(the first KEDA build takes about 15 minutes on 2 cores)"
    )


def test_without_overrides_or_a_source_tree_the_message_names_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binaries, "BUILD_SCRIPT", tmp_path / "no-such-build.sh")
    with pytest.raises(
        BinariesMissingError,
        match=re.escape(
            f"no control-plane build found: set {ENV_BIN_DIR} (and {ENV_CRD_DIR}, "
            f"{ENV_KWOK_STAGES}) or run from a Climatik source tree"
        ),
    ):
        locate_binaries()
    with pytest.raises(
        BinariesMissingError,
        match=re.escape(
            f"no KEDA build found: set {ENV_KEDA_BIN_DIR} (and {ENV_KEDA_CRD_DIR}, "
            f"{ENV_KEDA_RBAC_DIR}) or run from a Climatik source tree"
        ),
    ):
        locate_keda()
