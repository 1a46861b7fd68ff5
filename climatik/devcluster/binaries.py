"""Where the control-plane binaries and third-party CRDs built by `hack/control-plane` live.

The build script names its output directory after a digest of the pinned versions, so the only
source of truth for that name is the script itself (`build.sh --print`). Environment variables
override it for installs that have no source tree. The KEDA and KServe add-ons (`build.sh --with
keda,kserve`) are version sets of their own, located the same way.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "prometheus",
    "promtool",
)
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "control-plane" / "build.sh"
ENV_BIN_DIR = "CLIMATIK_CONTROL_PLANE_BIN_DIR"
ENV_CRD_DIR = "CLIMATIK_CONTROL_PLANE_CRD_DIR"
ENV_KWOK_STAGES = "CLIMATIK_CONTROL_PLANE_KWOK_STAGES"
KEDA_BINARIES = ("keda-operator", "keda-adapter")
ENV_KEDA_BIN_DIR = "CLIMATIK_KEDA_BIN_DIR"
ENV_KEDA_CRD_DIR = "CLIMATIK_KEDA_CRD_DIR"
ENV_KEDA_RBAC_DIR = "CLIMATIK_KEDA_RBAC_DIR"
KSERVE_BINARIES = ("kserve-manager",)
ENV_KSERVE_BIN_DIR = "CLIMATIK_KSERVE_BIN_DIR"
ENV_KSERVE_CRD_DIR = "CLIMATIK_KSERVE_CRD_DIR"
ENV_KSERVE_MANIFEST_DIR = "CLIMATIK_KSERVE_MANIFEST_DIR"


class BinariesMissingError(RuntimeError):
    """The control plane has not been built; the message says how to build it."""


@dataclass(frozen=True)
class ControlPlaneBinaries:
    """Resolved paths of one built version set."""

    bin_dir: Path
    crd_dir: Path
    kwok_stages: Path
    version_set: str

    def path(self, name: str) -> Path:
        """Absolute path of one binary."""
        return self.bin_dir / name

    def missing(self) -> list[str]:
        """Names of binaries or data files that are not there yet."""
        absent = [b for b in BINARIES if not os.access(self.path(b), os.X_OK)]
        if not self.kwok_stages.is_file():
            absent.append(str(self.kwok_stages))
        if not self.crd_dir.is_dir() or not any(self.crd_dir.glob("*.yaml")):
            absent.append(f"{self.crd_dir}/*.yaml")
        return absent

    def third_party_crds(self) -> list[Path]:
        """KEDA, KServe and VPA CRD files, in a stable order."""
        return sorted(self.crd_dir.glob("*.yaml"))


@dataclass(frozen=True)
class KedaBinaries:
    """Resolved paths of the KEDA operator and metrics adapter and KEDA's own manifests."""

    bin_dir: Path
    crd_dir: Path
    rbac_dir: Path
    version_set: str

    def path(self, name: str) -> Path:
        """Absolute path of one binary."""
        return self.bin_dir / name

    def missing(self) -> list[str]:
        """Names of binaries or manifest folders that are not there yet."""
        absent = [b for b in KEDA_BINARIES if not os.access(self.path(b), os.X_OK)]
        absent += [
            f"{folder}/*.yaml"
            for folder in (self.crd_dir, self.rbac_dir)
            if not folder.is_dir() or not any(folder.glob("*.yaml"))
        ]
        return absent

    def crds(self) -> list[Path]:
        """KEDA's six CRDs, in a stable order."""
        return sorted(self.crd_dir.glob("*.yaml"))

    def rbac(self) -> list[Path]:
        """KEDA's ClusterRoles, Roles and bindings for its operator and metrics adapter."""
        return sorted(self.rbac_dir.glob("*.yaml"))


@dataclass(frozen=True)
class KServeBinaries:
    """Resolved paths of KServe's controller and the manifests taken from its module."""

    bin_dir: Path
    crd_dir: Path
    manifest_dir: Path
    version_set: str

    def path(self, name: str) -> Path:
        """Absolute path of one binary."""
        return self.bin_dir / name

    def missing(self) -> list[str]:
        """Names of binaries or manifest files that are not there yet."""
        absent = [b for b in KSERVE_BINARIES if not os.access(self.path(b), os.X_OK)]
        if not self.crd_dir.is_dir() or not any(self.crd_dir.glob("*.yaml")):
            absent.append(f"{self.crd_dir}/*.yaml")
        manifests = (self.cluster_role, self.config_map, self.webhooks)
        absent += [str(m) for m in manifests if not m.is_file()]
        return absent

    def crds(self) -> list[Path]:
        """KServe's CRDs, in a stable order."""
        return sorted(self.crd_dir.glob("*.yaml"))

    @property
    def cluster_role(self) -> Path:
        """KServe's `kserve-manager-role` ClusterRole (config/rbac/role.yaml)."""
        return self.manifest_dir / "rbac-role.yaml"

    @property
    def config_map(self) -> Path:
        """KServe's `inferenceservice-config` (config/configmap/inferenceservice.yaml)."""
        return self.manifest_dir / "configmap-inferenceservice.yaml"

    @property
    def webhooks(self) -> Path:
        """KServe's webhook configurations (config/webhook/manifests.yaml)."""
        return self.manifest_dir / "webhook-manifests.yaml"


def _printed_build() -> dict[str, str]:
    """The `key=value` lines of `build.sh --print`: the output folders of every version set."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise BinariesMissingError(f"{BUILD_SCRIPT} --print failed: {result.stderr.strip()}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def locate_keda() -> KedaBinaries:
    """Find the built KEDA add-on, raising BinariesMissingError with the fix if absent."""
    env_bin = os.environ.get(ENV_KEDA_BIN_DIR)
    if env_bin:
        bin_dir = Path(env_bin)
        found = KedaBinaries(
            bin_dir=bin_dir,
            crd_dir=Path(os.environ.get(ENV_KEDA_CRD_DIR, str(bin_dir / "crds"))),
            rbac_dir=Path(os.environ.get(ENV_KEDA_RBAC_DIR, str(bin_dir / "rbac"))),
            version_set=bin_dir.name,
        )
    elif BUILD_SCRIPT.is_file():
        values = _printed_build()
        found = KedaBinaries(
            bin_dir=Path(values["keda_bin_dir"]),
            crd_dir=Path(values["keda_crd_dir"]),
            rbac_dir=Path(values["keda_rbac_dir"]),
            version_set=values["keda_version_set"],
        )
    else:
        raise BinariesMissingError(
            f"no KEDA build found: set {ENV_KEDA_BIN_DIR} (and {ENV_KEDA_CRD_DIR}, "
            f"{ENV_KEDA_RBAC_DIR}) or run from a Climatik source tree"
        )
    missing = found.missing()
    if missing:
        raise BinariesMissingError(
            f"KEDA {found.version_set} is not built (missing: {', '.join(missing)}); "
            f"run `bash {BUILD_SCRIPT} --with keda` (the first KEDA build takes about 15 "
            "minutes on 2 cores)"
        )
    return found


def locate_kserve() -> KServeBinaries:
    """Find the built KServe add-on, raising BinariesMissingError with the fix if absent."""
    env_bin = os.environ.get(ENV_KSERVE_BIN_DIR)
    if env_bin:
        bin_dir = Path(env_bin)
        found = KServeBinaries(
            bin_dir=bin_dir,
            crd_dir=Path(os.environ.get(ENV_KSERVE_CRD_DIR, str(bin_dir / "crds"))),
            manifest_dir=Path(os.environ.get(ENV_KSERVE_MANIFEST_DIR, str(bin_dir / "manifests"))),
            version_set=bin_dir.name,
        )
    elif BUILD_SCRIPT.is_file():
        values = _printed_build()
        found = KServeBinaries(
            bin_dir=Path(values["kserve_bin_dir"]),
            crd_dir=Path(values["kserve_crd_dir"]),
            manifest_dir=Path(values["kserve_manifest_dir"]),
            version_set=values["kserve_version_set"],
        )
    else:
        raise BinariesMissingError(
            f"no KServe build found: set {ENV_KSERVE_BIN_DIR} (and {ENV_KSERVE_CRD_DIR}, "
            f"{ENV_KSERVE_MANIFEST_DIR}) or run from a Climatik source tree"
        )
    missing = found.missing()
    if missing:
        raise BinariesMissingError(
            f"KServe {found.version_set} is not built (missing: {', '.join(missing)}); "
            f"run `bash {BUILD_SCRIPT} --with kserve` (the first KServe build takes about "
            "6 minutes on 2 cores)"
        )
    return found


def locate_binaries() -> ControlPlaneBinaries:
    """Find the built control plane, raising BinariesMissingError with the fix if absent."""
    env_bin = os.environ.get(ENV_BIN_DIR)
    if env_bin:
        bin_dir = Path(env_bin)
        found = ControlPlaneBinaries(
            bin_dir=bin_dir,
            crd_dir=Path(os.environ.get(ENV_CRD_DIR, str(bin_dir / "crds"))),
            kwok_stages=Path(os.environ.get(ENV_KWOK_STAGES, str(bin_dir / "kwok-stages.yaml"))),
            version_set=bin_dir.name,
        )
    elif BUILD_SCRIPT.is_file():
        values = _printed_build()
        found = ControlPlaneBinaries(
            bin_dir=Path(values["bin_dir"]),
            crd_dir=Path(values["crd_dir"]),
            kwok_stages=Path(values["kwok_stages"]),
            version_set=values["version_set"],
        )
    else:
        raise BinariesMissingError(
            f"no control-plane build found: set {ENV_BIN_DIR} (and {ENV_CRD_DIR}, "
            f"{ENV_KWOK_STAGES}) or run from a Climatik source tree"
        )
    missing = found.missing()
    if missing:
        raise BinariesMissingError(
            f"control plane {found.version_set} is not built (missing: {', '.join(missing)}); "
            f"run `bash {BUILD_SCRIPT}` (the first build takes 20+ minutes on 2 cores)"
        )
    return found
