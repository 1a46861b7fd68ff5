"""The dev cluster's service proxy: which Service a host name means and where it leads."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.devcluster.service_proxy import UnroutableError, service_of, upstream


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("prometheus-server.monitoring.svc", ("monitoring", "prometheus-server")),
        ("Prometheus-Server.Monitoring.svc.cluster.local.", ("monitoring", "prometheus-server")),
        ("prometheus-server.monitoring", None),  # needs cluster DNS search paths: not a .svc name
        ("a.b.c.svc", None),
        (".monitoring.svc", None),
        ("prometheus.example.com", None),
        ("127.0.0.1", None),
    ],
)
def test_only_service_names_are_services(host: str, expected: tuple[str, str] | None) -> None:
    assert service_of(host) == expected


def _service(kind: str = "ExternalName", ports: list[dict[str, Any]] | None = None) -> Any:
    spec: dict[str, Any] = {"type": kind}
    if kind == "ExternalName":
        spec["externalName"] = "localhost"
    if ports is not None:
        spec["ports"] = ports
    return {"metadata": {"namespace": "monitoring", "name": "prom"}, "spec": spec}


def test_an_external_name_service_leads_to_its_name_at_the_ports_target() -> None:
    service = _service(ports=[{"port": 9090, "targetPort": 41207}, {"port": 80}])
    assert upstream(service, 9090) == ("localhost", 41207)
    assert upstream(service, 80) == ("localhost", 80)
    assert upstream(_service(), 9090) == ("localhost", 9090)
    with pytest.raises(UnroutableError, match="has no port 9091 \\(it lists 9090, 80\\)"):
        upstream(service, 9091)


def test_a_service_of_kwok_pods_is_refused_with_the_reason() -> None:
    with pytest.raises(UnroutableError, match="monitoring/prom is not an ExternalName Service"):
        upstream(_service("ClusterIP", [{"port": 9090}]), 9090)
