"""The simulated GPU fleet a dev cluster starts with: racks of kwok nodes.

Rack-aware placement and per-rack caps need nodes that carry a rack label and GPU capacity, so
the topology is small and explicit: a list of racks, each with a node count and GPUs per node.
The file form is YAML (see `docs/dev-cluster.md`); anything unknown is refused rather than
silently ignored, so a typo cannot produce a different cluster than the one asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from climatik.domain.errors import UserError, describe_yaml_error

DEFAULT_RACK_LABEL_KEY = "climatik-project.ai/rack"
KWOK_NODE_LABELS = {"type": "kwok"}
"""kwok manages only nodes with these labels, so real nodes joined by hand stay untouched."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")


class TopologyError(UserError, ValueError):
    """A topology file that cannot describe a cluster; the message says what to fix."""


@dataclass(frozen=True)
class Rack:
    """One rack of identical simulated GPU nodes."""

    name: str
    nodes: int
    gpus_per_node: int = 8
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = 110

    def node_names(self) -> list[str]:
        """Node names are derived from the rack so a node's rack is obvious in any listing."""
        return [f"{self.name}-node-{i}" for i in range(self.nodes)]


@dataclass(frozen=True)
class Topology:
    """Racks plus the label key that tells which rack a node is in."""

    racks: tuple[Rack, ...] = field(
        default_factory=lambda: (Rack(name="rack-a", nodes=4), Rack(name="rack-b", nodes=4))
    )
    rack_label_key: str = DEFAULT_RACK_LABEL_KEY

    def node_names(self) -> list[str]:
        """All node names, rack by rack."""
        return [name for rack in self.racks for name in rack.node_names()]

    def node_manifests(
        self, extra_annotations: Callable[[str], dict[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        """Node objects for the API server; kwok fills in conditions and keeps them Ready.

        `extra_annotations(node_name)` adds an add-on's annotations (the VPA add-on's resource
        metrics path) to each node.
        """
        manifests: list[dict[str, Any]] = []
        for rack in self.racks:
            resources = {
                "cpu": rack.cpu,
                "memory": rack.memory,
                "pods": str(rack.pods),
                "nvidia.com/gpu": str(rack.gpus_per_node),
            }
            for name in rack.node_names():
                labels = {
                    **KWOK_NODE_LABELS,
                    self.rack_label_key: rack.name,
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/gpu": "",
                }
                manifests.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": name,
                            "labels": labels,
                            "annotations": {
                                "kwok.x-k8s.io/node": "fake",
                                **(extra_annotations(name) if extra_annotations else {}),
                            },
                        },
                        "status": {"capacity": resources, "allocatable": resources},
                    }
                )
        return manifests


_RACK_KEYS = {"name", "nodes", "gpusPerNode", "cpu", "memory", "pods"}
_TOP_KEYS = {"racks", "rackLabelKey"}


def parse_topology(data: object) -> Topology:
    """Build a Topology from parsed YAML, refusing unknown keys and impossible values."""
    if data is None:
        return Topology()
    if not isinstance(data, dict):
        raise TopologyError("a topology is a mapping with `racks` and optional `rackLabelKey`")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise TopologyError(f"unknown topology keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    label_key = data.get("rackLabelKey", DEFAULT_RACK_LABEL_KEY)
    if not isinstance(label_key, str) or not label_key:
        raise TopologyError("rackLabelKey must be a non-empty label key")
    raw_racks = data.get("racks")
    if raw_racks is None:
        return Topology(rack_label_key=label_key)
    if not isinstance(raw_racks, list) or not raw_racks:
        raise TopologyError("racks must be a non-empty list")
    racks = tuple(_parse_rack(i, raw) for i, raw in enumerate(raw_racks))
    names = [rack.name for rack in racks]
    if len(set(names)) != len(names):
        raise TopologyError(f"rack names must be unique, got {names}")
    return Topology(racks=racks, rack_label_key=label_key)


def _parse_rack(index: int, raw: object) -> Rack:
    where = f"racks[{index}]"
    if not isinstance(raw, dict):
        raise TopologyError(f"{where} must be a mapping with name, nodes, gpusPerNode")
    unknown = set(raw) - _RACK_KEYS
    if unknown:
        raise TopologyError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_RACK_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise TopologyError(f"{where}.name must be a lowercase DNS label (at most 42 chars)")
    nodes = raw.get("nodes")
    gpus = raw.get("gpusPerNode", 8)
    pods = raw.get("pods", 110)
    for key, value in (("nodes", nodes), ("gpusPerNode", gpus), ("pods", pods)):
        # bool is an int in Python; `nodes: true` is a typo, not one node.
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TopologyError(f"{where}.{key} must be a non-negative integer, got {value!r}")
    assert isinstance(nodes, int)
    assert isinstance(gpus, int)
    assert isinstance(pods, int)
    if nodes == 0:
        raise TopologyError(f"{where}.nodes must be at least 1")
    cpu = str(raw.get("cpu", "64"))
    memory = str(raw.get("memory", "512Gi"))
    return Rack(name=name, nodes=nodes, gpus_per_node=gpus, cpu=cpu, memory=memory, pods=pods)


def load_topology(path: Path | None) -> Topology:
    """Read a topology file, or return the default 2 racks x 4 nodes x 8 GPUs."""
    if path is None:
        return Topology()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopologyError(f"cannot read topology {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        where = describe_yaml_error(exc, str(path))
        raise TopologyError(f"topology is not valid YAML: {where}") from exc
    return parse_topology(data)
