"""A Service's EndpointSlices read as the upstreams a router may send to (pure, no I/O).

Slices are `discovery.k8s.io/v1` objects labelled `kubernetes.io/service-name`; one Service may
have several (one per address family, and more past 100 endpoints each). An endpoint is healthy
when neither its `ready` nor its `serving` condition is false: Kubernetes documents an absent
condition as unknown, to be read as ready, and a terminating pod reports `ready: false`, so it
gets no new requests while its open ones finish. Objects are read through `climatik.kube.json`,
so a field of the wrong type reads as absent rather than raising.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from climatik.kube.json import JsonObject, as_object, as_text, child, integer, items, objects, text

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class Upstream:
    """One model server the router may send to."""

    name: str
    """Its pod's name (what Prometheus labels it by), or its address when the slice names none."""
    namespace: str
    host: str
    port: int
    healthy: bool = True

    @property
    def address(self) -> str:
        """`ip:port` (`[ipv6]:port`): what a gateway is told to send to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"


def upstreams_from_slices(slices: Iterable[JsonObject], port_name: str | None) -> list[Upstream]:
    """Every endpoint of `slices` on the port named `port_name` (any slice's first port when
    None), one per name; an endpoint listed healthy in one slice and not in another (a slice
    being rewritten) counts as healthy."""
    found: dict[str, Upstream] = {}
    for slice_ in slices:
        port = _port(slice_, port_name)
        if port is None:
            continue
        namespace = text(child(slice_, "metadata"), "namespace") or ""
        for endpoint in objects(slice_, "endpoints"):
            addresses = [a for a in map(as_text, items(endpoint, "addresses")) if a]
            if not addresses:
                continue
            target = child(endpoint, "targetRef")
            name = text(target, "name") or f"{addresses[0]}:{port}"
            healthy = _healthy(child(endpoint, "conditions"))
            previous = found.get(name)
            if previous is None or (healthy and not previous.healthy):
                found[name] = Upstream(name, namespace, addresses[0], port, healthy)
    return sorted(found.values(), key=lambda u: u.name)


def _port(slice_: JsonObject, port_name: str | None) -> int | None:
    for entry in items(slice_, "ports"):
        port = as_object(entry)
        if port_name is None or text(port, "name") == port_name:
            number = integer(port, "port")
            return number if number is not None and 0 < number < 65536 else None
    return None


def _healthy(conditions: JsonObject) -> bool:
    return conditions.get("ready") is not False and conditions.get("serving") is not False
