"""The kustomize base's NetworkPolicy, read as the cluster would enforce it: egress only to
named destinations, never to link-local or cloud-metadata addresses, never plain HTTP to the
Internet; /metrics only from the monitoring namespace. (tests/integration/test_deploy.py holds
the Helm chart's renderings to the same promises and has the API server accept them.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.networkpolicy import (
    METADATA_ADDRESSES,
    egress_allows,
    ingress_rules_for,
    opens_port,
    wide_open_to_everyone,
)

POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "base" / "networkpolicy.yaml"


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text(encoding="utf-8"))
    assert loaded["kind"] == "NetworkPolicy"
    assert loaded["spec"]["policyTypes"] == ["Ingress", "Egress"]
    return loaded


@pytest.mark.parametrize("address", METADATA_ADDRESSES)
@pytest.mark.parametrize("port", [80, 443, 53, 6443, 9090])
def test_no_egress_reaches_a_metadata_or_link_local_address(
    policy: dict[str, Any], address: str, port: int
) -> None:
    assert not egress_allows(policy, address, port), f"{address}:{port} is reachable"


def test_no_rule_allows_port_80_to_any_address(policy: dict[str, Any]) -> None:
    for rule in policy["spec"]["egress"]:
        assert not (opens_port(rule, 80) and wide_open_to_everyone(rule)), rule
    for public in ("93.184.215.14", "1.1.1.1", "2606:4700::1111"):
        assert not egress_allows(policy, public, 80), public


def test_egress_goes_to_the_named_destinations_only(policy: dict[str, Any]) -> None:
    # The carbon APIs and an HTTPS cooling webhook: HTTPS to public addresses.
    for public in ("93.184.215.14", "2606:4700::1111"):
        assert egress_allows(policy, public, 443)
        assert not egress_allows(policy, public, 8443)
    # The API server at a private address (its default ranges), on its ports only.
    assert egress_allows(policy, "10.0.0.1", 6443)
    assert egress_allows(policy, "172.18.0.2", 443)
    assert not egress_allows(policy, "10.0.0.1", 8080)
    # DNS and Prometheus are pods, chosen by selectors: no address outside the pod network.
    assert not egress_allows(policy, "8.8.8.8", 53, "UDP")
    assert not egress_allows(policy, "93.184.215.14", 9090)
    # No other private network is reachable over HTTPS unless configured (the API server's
    # ranges aside): not the carrier-grade NAT range, not IPv6 unique-local addresses.
    assert not egress_allows(policy, "100.64.1.1", 443)
    assert not egress_allows(policy, "fd12::1", 443)


def test_metrics_are_served_only_to_the_monitoring_namespace(policy: dict[str, Any]) -> None:
    (metrics,) = ingress_rules_for(policy, 8080)
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # The webhook port is open to its caller, the API server (no pod peer can name it), and
    # nothing else is open at all.
    (webhook,) = ingress_rules_for(policy, 9443)
    assert [p["port"] for p in webhook["ports"]] == [9443]
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert opened == {8080, 9443}
