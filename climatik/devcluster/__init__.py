"""A real local Kubernetes control plane for tests and demos (`climatik dev-cluster`).

`up(dir, topology)` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
built by `hack/control-plane/build.sh` and returns a ClusterInfo once everything is ready;
`down(dir)` stops them. The names are loaded lazily so `climatik --help` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climatik.devcluster.cluster import ClusterInfo, DevClusterError, down, up
    from climatik.devcluster.topology import Rack, Topology, load_topology

__all__ = ["ClusterInfo", "DevClusterError", "Rack", "Topology", "down", "load_topology", "up"]

_HOMES = {
    "ClusterInfo": "cluster",
    "DevClusterError": "cluster",
    "down": "cluster",
    "up": "cluster",
    "Rack": "topology",
    "Topology": "topology",
    "load_topology": "topology",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"climatik.devcluster.{home}"), name)
