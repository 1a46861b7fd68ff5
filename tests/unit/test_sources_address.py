"""Address guard for user-configured Prometheus URLs (issue 11: security guards in code)."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from climatik.sources.address import (
    AddressPolicy,
    AddressRejectedError,
    ConnectTo,
    ConnectToResolver,
    GuardedResolver,
    redact,
)


@pytest.mark.parametrize(
    "address",
    [
        "http://prometheus.monitoring.svc:9090",
        "https://prometheus.example.com",
        "http://10.0.0.5:9090/prometheus",
        "http://127.0.0.1:9090",
        "http://[2001:db8::1]:9090",
        # IPv6 carrying an ordinary IPv4 address (10.0.0.5): NAT64, local-use NAT64, 6to4.
        "http://[64:ff9b::a00:5]:9090",
        "http://[64:ff9b:1::a00:5]:9090",
        "http://[2002:a00:5::1]:9090",
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
        # IPv6 addresses that carry 169.254.169.254: IPv4-compatible, IPv4-translated (SIIT),
        # NAT64 (well-known and local-use prefixes, /96 and /48 layouts), 6to4, and Teredo
        # (server, and a client, whose address is stored inverted).
        ("http://[::169.254.169.254]", "carries the IPv4 address 169.254.169.254"),
        ("http://[::ffff:0:a9fe:a9fe]", "carries the IPv4 address 169.254.169.254"),
        ("http://[64:ff9b::a9fe:a9fe]", "carries the IPv4 address 169.254.169.254"),
        ("http://[64:ff9b:1::a9fe:a9fe]", "carries the IPv4 address 169.254.169.254"),
        ("http://[64:ff9b:1:a9fe:a9:fe00::]", "carries the IPv4 address 169.254.169.254"),
        ("http://[2002:a9fe:a9fe::1]:9090", "carries the IPv4 address 169.254.169.254"),
        ("http://[2001:0:a9fe:a9fe::1]", "carries the IPv4 address 169.254.169.254"),
        ("http://[2001:0:4136:e378:8000:63bf:5601:5601]", "carries the IPv4 address 169.254"),
        ("http://[64:ff9b::6464:64c8]", "carries the IPv4 address 100.100.100.200"),
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


@pytest.mark.parametrize(
    "address",
    [
        "http://admin:hunter2@prometheus:9090",
        "http://admin:hunter2@prometheus:9090/?token=abc",
        "http://admin:hunter2@[::1",  # not even a URL
        "admin:hunter2@prometheus:9090",  # no scheme
    ],
)
def test_refusals_never_repeat_credentials(address: str) -> None:
    with pytest.raises(AddressRejectedError) as caught:
        AddressPolicy().validate(address)
    assert "hunter2" not in str(caught.value)
    assert "admin" not in str(caught.value)


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("http://u:pw@cool:8080/hook?token=abc#x", "http://***@cool:8080/hook?***"),
        ("https://cool/hook", "https://cool/hook"),
        ("http://u:pw@[::1", "http://***@[::1"),
        ("u:pw@cool:8080", "***@cool:8080"),
    ],
)
def test_redact_hides_userinfo_and_query(address: str, shown: str) -> None:
    assert redact(address) == shown


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


@pytest.mark.parametrize(
    "resolved", ["::169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "fe80::1"]
)
async def test_resolver_refuses_names_resolving_to_ipv6_carrying_metadata(resolved: str) -> None:
    resolver = GuardedResolver(FixedResolver("2001:db8::7", resolved))
    with pytest.raises(OSError, match="refused address"):
        await resolver.resolve("evil.example", 80, socket.AF_INET6)


async def test_resolver_passes_ordinary_names() -> None:
    inner = FixedResolver("10.0.0.7", "2001:db8::7")
    resolver = GuardedResolver(inner)
    results = await resolver.resolve("prometheus", 9090)
    assert [r["host"] for r in results] == ["10.0.0.7", "2001:db8::7"]
    await resolver.close()
    assert inner.closed


def test_connect_to_rules_parse_as_curl_writes_them() -> None:
    rule = ConnectTo.parse("Prometheus-Server.monitoring.svc:9090:127.0.0.1:41207")
    assert rule == ConnectTo("prometheus-server.monitoring.svc", 9090, "127.0.0.1", 41207)
    for bad in ("prometheus:9090", "p:9090:127.0.0.1:http", "p:0:127.0.0.1:1", ":1:h:2"):
        with pytest.raises(ValueError, match=r"HOST:PORT:TO_HOST:TO_PORT|is not a port"):
            ConnectTo.parse(bad)


async def test_connect_to_sends_its_host_and_port_elsewhere_and_the_guard_still_checks() -> None:
    inner = FixedResolver("10.0.0.7")
    rules = [
        ConnectTo("prometheus-server.monitoring.svc", 9090, "127.0.0.1", 41207),
        ConnectTo("metrics.monitoring.svc", 80, "proxy.example", 8080),
        ConnectTo("evil.monitoring.svc", 80, "169.254.169.254", 80),
    ]
    resolver = GuardedResolver(ConnectToResolver(rules, inner))
    [local] = await resolver.resolve("prometheus-server.monitoring.svc", 9090)
    assert (local["hostname"], local["host"], local["port"]) == (
        "prometheus-server.monitoring.svc",
        "127.0.0.1",
        41207,
    )
    [named] = await resolver.resolve("metrics.monitoring.svc", 80)
    assert (named["host"], named["port"]) == ("10.0.0.7", 8080)
    # Another port of a named host, or another host, resolves as before.
    [other] = await resolver.resolve("prometheus-server.monitoring.svc", 9091)
    assert (other["host"], other["port"]) == ("10.0.0.7", 9091)
    with pytest.raises(OSError, match="refused address"):
        await resolver.resolve("evil.monitoring.svc", 80)
