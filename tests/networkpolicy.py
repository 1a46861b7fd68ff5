"""What a NetworkPolicy allows, evaluated by hand for the addresses the security promises name.

Pure and conservative, for tests of the installers: a rule without `to` (or `from`) matches
every peer, a rule without `ports` every port, a named port every port. A pod or namespace
selector never matches an address outside the cluster's pods (metadata services, the
Internet), as in every CNI; an ipBlock matches its CIDR minus its exceptions; an IPv4-mapped
IPv6 address is its IPv4 address, as the kernel sends it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

Rule = Mapping[str, Any]

METADATA_ADDRESSES = (
    "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack ... metadata
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.0.23",  # Tencent Cloud metadata
    "100.100.100.200",  # Alibaba Cloud metadata
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::a9fe:a9fe",  # link-local IPv6
    "::ffff:169.254.169.254",  # IPv4-mapped form of the metadata address
    "64:ff9b::a9fe:a9fe",  # its NAT64 form
)


def _rules(policy: Mapping[str, Any], direction: str) -> Sequence[Rule]:
    spec = policy.get("spec") or {}
    rules: Sequence[Rule] = spec.get(direction) or ()
    return rules


def opens_port(rule: Rule, port: int, protocol: str = "TCP") -> bool:
    """Whether the rule covers `port` (no `ports`, or a named port, counts as yes)."""
    ports = rule.get("ports")
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        value = entry.get("port")
        if value is None or isinstance(value, str):
            return True  # every port, or a named one (could be any number)
        if int(value) <= port <= int(entry.get("endPort", value)):
            return True
    return False


def _address_matches(peers: Sequence[Mapping[str, Any]] | None, address: str) -> bool:
    if not peers:
        return True
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # never on the wire: the kernel sends IPv4 to the mapped address
    for peer in peers:
        block = peer.get("ipBlock")
        if block is None:
            continue  # selectors choose pods, never an address outside the pod network
        network = ipaddress.ip_network(block["cidr"], strict=False)
        if ip.version != network.version or ip not in network:
            continue
        excepted = (ipaddress.ip_network(e, strict=False) for e in block.get("except") or ())
        if not any(ip.version == e.version and ip in e for e in excepted):
            return True
    return False


def egress_allows(
    policy: Mapping[str, Any], address: str, port: int, protocol: str = "TCP"
) -> bool:
    """Whether the policy lets its pods connect to `address:port` (an address, not a pod)."""
    return any(
        opens_port(rule, port, protocol) and _address_matches(rule.get("to"), address)
        for rule in _rules(policy, "egress")
    )


def ingress_rules_for(policy: Mapping[str, Any], port: int) -> Iterator[Rule]:
    """The ingress rules that open `port` (TCP)."""
    return (r for r in _rules(policy, "ingress") if opens_port(r, port, "TCP"))


def wide_open_to_everyone(rule: Rule) -> bool:
    """A rule towards any address: no `to`, or an ipBlock of 0.0.0.0/0 or ::/0 (whatever it
    takes out)."""
    peers = rule.get("to")
    if not peers:
        return True
    for peer in peers:
        block = peer.get("ipBlock") or {}
        if block.get("cidr") in {"0.0.0.0/0", "::/0"}:
            return True
    return False
