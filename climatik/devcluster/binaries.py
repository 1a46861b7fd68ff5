"""Where the control-plane binaries and third-party CRDs built by `hack/control-plane` live.

The build script names its output directory after a digest of the pinned versions, so the only
source of truth for that name is the script itself (`build.sh --print`). Environment variables
override it for installs that have no source tree. The KEDA, KServe and VPA add-ons (`build.sh
--with keda,kserve,vpa`) are version sets of their own, located the same way.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

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
VPA_BINARIES = ("vpa-recommender", "vpa-updater", "vpa-admission-controller", "metrics-server")
ENV_VPA_BIN_DIR = "CLIMATIK_VPA_BIN_DIR"
ENV_VPA_MANIFEST_DIR = "CLIMATIK_VPA_MANIFEST_DIR"
ENV_VPA_KWOK_METRICS = "CLIMATIK_VPA_KWOK_METRICS"


class BinariesMissingError(RuntimeError):
    """The control plane has not been built; the message says how to build it."""


def _not_executable(bin_dir: Path, names: tuple[str, ...]) -> list[str]:
    """The binaries of `names` missing (or not executable) in `bin_dir`."""
    return [n for n in names if not os.access(bin_dir / n, os.X_OK)]


def _without_yaml(*folders: Path) -> list[str]:
    """`FOLDER/*.yaml` for each folder that is absent or holds no YAML file."""
    return [
        f"{folder}/*.yaml"
        for folder in folders
        if not folder.is_dir() or not any(folder.glob("*.yaml"))
    ]


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
        absent = _not_executable(self.bin_dir, BINARIES)
        if not self.kwok_stages.is_file():
            absent.append(str(self.kwok_stages))
        return absent + _without_yaml(self.crd_dir)

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
        return _not_executable(self.bin_dir, KEDA_BINARIES) + _without_yaml(
            self.crd_dir, self.rbac_dir
        )

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
        absent = _not_executable(self.bin_dir, KSERVE_BINARIES) + _without_yaml(self.crd_dir)
        manifests = (self.cluster_role, self.config_map, self.webhooks, self.serving_runtime)
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

    @property
    def serving_runtime(self) -> Path:
        """KServe's `kserve-huggingfaceserver` ClusterServingRuntime
        (config/runtimes/kserve-huggingfaceserver.yaml): what `modelFormat: huggingface` selects."""
        return self.manifest_dir / "runtimes-kserve-huggingfaceserver.yaml"


@dataclass(frozen=True)
class VpaBinaries:
    """Resolved paths of VPA's three components, metrics-server, their RBAC manifests and kwok's
    resource-metrics configuration."""

    bin_dir: Path
    manifest_dir: Path
    kwok_metrics: Path
    version_set: str

    def path(self, name: str) -> Path:
        """Absolute path of one binary."""
        return self.bin_dir / name

    def missing(self) -> list[str]:
        """Names of binaries or manifest files that are not there yet."""
        absent = _not_executable(self.bin_dir, VPA_BINARIES)
        files = (*self.rbac(), self.kwok_metrics)
        return absent + [str(f) for f in files if not f.is_file()]

    def rbac(self) -> list[Path]:
        """VPA's ServiceAccounts, roles and bindings (deploy/vpa-rbac.yaml) and metrics-server's
        (manifests/base/rbac.yaml)."""
        return [self.manifest_dir / "vpa-rbac.yaml", self.manifest_dir / "metrics-server-rbac.yaml"]


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


class _Built(Protocol):
    @property
    def version_set(self) -> str: ...

    def missing(self) -> list[str]: ...


_BuiltT = TypeVar("_BuiltT", bound=_Built)


@dataclass(frozen=True)
class _VersionSet:
    """How to find one version set's output: the environment first, then `build.sh --print`."""

    name: str
    """In messages: "control plane" is not built, no "control-plane" build (`build_name`)."""
    build_name: str
    print_prefix: str
    """Its keys in `build.sh --print`: `<prefix>bin_dir`, `<prefix>version_set`, ...<path>."""
    bin_env: str
    paths: tuple[tuple[str, str, str], ...]
    """Its other paths: (field, environment override, default under the binaries' folder)."""
    build: str
    """How to build it, and how long that takes."""


_CONTROL_PLANE = _VersionSet(
    name="control plane",
    build_name="control-plane",
    print_prefix="",
    bin_env=ENV_BIN_DIR,
    paths=(
        ("crd_dir", ENV_CRD_DIR, "crds"),
        ("kwok_stages", ENV_KWOK_STAGES, "kwok-stages.yaml"),
    ),
    build=f"`bash {BUILD_SCRIPT}` (the first build takes 20+ minutes on 2 cores)",
)
_KEDA = _VersionSet(
    name="KEDA",
    build_name="KEDA",
    print_prefix="keda_",
    bin_env=ENV_KEDA_BIN_DIR,
    paths=(("crd_dir", ENV_KEDA_CRD_DIR, "crds"), ("rbac_dir", ENV_KEDA_RBAC_DIR, "rbac")),
    build=(
        f"`bash {BUILD_SCRIPT} --with keda` (the first KEDA build takes about 15 minutes on "
        "2 cores)"
    ),
)
_KSERVE = _VersionSet(
    name="KServe",
    build_name="KServe",
    print_prefix="kserve_",
    bin_env=ENV_KSERVE_BIN_DIR,
    paths=(
        ("crd_dir", ENV_KSERVE_CRD_DIR, "crds"),
        ("manifest_dir", ENV_KSERVE_MANIFEST_DIR, "manifests"),
    ),
    build=(
        f"`bash {BUILD_SCRIPT} --with kserve` (the first KServe build takes about 6 minutes on "
        "2 cores)"
    ),
)


_VPA = _VersionSet(
    name="VPA",
    build_name="VPA",
    print_prefix="vpa_",
    bin_env=ENV_VPA_BIN_DIR,
    paths=(
        ("manifest_dir", ENV_VPA_MANIFEST_DIR, "manifests"),
        ("kwok_metrics", ENV_VPA_KWOK_METRICS, "kwok-metrics.yaml"),
    ),
    build=(
        f"`bash {BUILD_SCRIPT} --with vpa` (the first VPA build takes about 8 minutes on 2 cores)"
    ),
)


def _locate(version_set: _VersionSet, make: Callable[..., _BuiltT]) -> _BuiltT:
    """`make(bin_dir=..., version_set=..., <paths>)` from the environment or the build script's
    answer; BinariesMissingError saying how to get it when it is not there."""
    env_bin = os.environ.get(version_set.bin_env)
    if env_bin:
        bin_dir = Path(env_bin)
        paths = {
            field: Path(os.environ.get(env, str(bin_dir / default)))
            for field, env, default in version_set.paths
        }
        found = make(bin_dir=bin_dir, version_set=bin_dir.name, **paths)
    elif BUILD_SCRIPT.is_file():
        values = _printed_build()
        prefix = version_set.print_prefix
        found = make(
            bin_dir=Path(values[f"{prefix}bin_dir"]),
            version_set=values[f"{prefix}version_set"],
            **{field: Path(values[f"{prefix}{field}"]) for field, _, _ in version_set.paths},
        )
    else:
        names = ", ".join(env for _, env, _ in version_set.paths)
        raise BinariesMissingError(
            f"no {version_set.build_name} build found: set {version_set.bin_env} (and {names}) "
            "or run from a Climatik source tree"
        )
    missing = found.missing()
    if missing:
        raise BinariesMissingError(
            f"{version_set.name} {found.version_set} is not built "
            f"(missing: {', '.join(missing)}); run {version_set.build}"
        )
    return found


def locate_keda() -> KedaBinaries:
    """Find the built KEDA add-on, raising BinariesMissingError with the fix if absent."""
    return _locate(_KEDA, KedaBinaries)


def locate_kserve() -> KServeBinaries:
    """Find the built KServe add-on, raising BinariesMissingError with the fix if absent."""
    return _locate(_KSERVE, KServeBinaries)


def locate_vpa() -> VpaBinaries:
    """Find the built VPA add-on, raising BinariesMissingError with the fix if absent."""
    return _locate(_VPA, VpaBinaries)


def locate_binaries() -> ControlPlaneBinaries:
    """Find the built control plane, raising BinariesMissingError with the fix if absent."""
    return _locate(_CONTROL_PLANE, ControlPlaneBinaries)
