"""Address guard for user-configured Prometheus URLs (issue 11: security guards in code)."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from climatik.sources.address import AddressPolicy, AddressRejectedError, GuardedResolver


@pytest.mark.parametrize(
    "address",
    [
        "http://prometheus.monitoring.svc:9090",
        "https://prometheus.example.com",
        "http://10.0.0.5:9090/prometheus",
        "http://127.0.0.1:9090",
        "http://[2001:db8::1]:9090",
    ],
)
def test_ordinary_addresses_pass(address: str) -> None:
    url = AddressPolicy().validate(address)
    assert url.scheme in {"http", "https"}


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://169.254.10.1:9090", "link-local"),
        ("http://[fe80::1]:9090", "link-local"),
        ("http://[fe80::1%25eth0]:9090", "link-local"),
        ("http://[::ffff:169.254.169.254]", "link-local"),
        ("http://[fd00:ec2::254]", "metadata"),
        ("http://100.100.100.200", "metadata"),
        ("http://metadata.google.internal", "metadata"),
        ("http://METADATA.google.internal.", "metadata"),
        ("http://2852039166", "four decimal numbers"),
        ("http://0xa9.0xfe.0xa9.0xfe", "four decimal numbers"),
        ("http://169.254.43518", "four decimal numbers"),
        ("http://0.0.0.0:9090", "not a unicast"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://prometheus:70", "scheme"),
        ("prometheus:9090", "scheme"),
        ("http://", "no host"),
        ("http://user:secret@prometheus:9090", "credentials"),
        ("http://prometheus:9090/?x=1", "query"),
        ("http://prometheus:9090/#frag", "query or fragment"),
    ],
)
def test_refused_addresses_say_why(address: str, why: str) -> None:
    with pytest.raises(AddressRejectedError, match=why):
        AddressPolicy().validate(address)


def test_allow_list_admits_only_listed_hosts() -> None:
    policy = AddressPolicy.from_hosts(["Prometheus.monitoring.svc", "10.0.0.5"])
    assert policy.validate("http://prometheus.monitoring.svc:9090").host == (
        "prometheus.monitoring.svc"
    )
    assert policy.validate("http://10.0.0.5").host == "10.0.0.5"
    with pytest.raises(AddressRejectedError, match="not in the allowed"):
        policy.validate("http://evil.example.com")
    # An allow-list never re-admits a metadata address.
    with pytest.raises(AddressRejectedError, match="link-local"):
        AddressPolicy.from_hosts(["169.254.169.254"]).validate("http://169.254.169.254")


class FixedResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_refuses_names_pointing_at_metadata() -> None:
    resolver = GuardedResolver(FixedResolver("10.0.0.7", "169.254.169.254"))
    with pytest.raises(OSError, match=r"evil\.example resolves to a refused address"):
        await resolver.resolve("evil.example", 80)


async def test_resolver_passes_ordinary_names() -> None:
    inner = FixedResolver("10.0.0.7", "2001:db8::7")
    resolver = GuardedResolver(inner)
    results = await resolver.resolve("prometheus", 9090)
    assert [r["host"] for r in results] == ["10.0.0.7", "2001:db8::7"]
    await resolver.close()
    assert inner.closed
