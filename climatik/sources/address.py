"""Guards for addresses that come from user configuration (a PowerCappingConfig's Prometheus).

A Prometheus address in a custom resource is chosen by whoever may create that resource, so the
controller must not become a way to reach the cloud metadata service (169.254.169.254 and
friends) or arbitrary hosts. This module guarantees, at request time:

- the scheme is `http` or `https`, the URL has a host and carries no credentials, query or
  fragment (credentials belong in Secrets, and would leak into logs and status messages);
- the host is not a link-local or metadata address, whether written literally (IPv4, IPv6,
  legacy numeric forms) or reached through a DNS name: `GuardedResolver` checks every address a
  name resolves to, so a name pointing at 169.254.169.254 is refused too;
- an IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated,
  NAT64, 6to4, Teredo) is refused when the IPv4 address it carries would be: the network turns
  `64:ff9b::a9fe:a9fe` into 169.254.169.254;
- when an allow-list of hosts is configured, the host is on it.

Every message that repeats a configured URL passes it through `redact` first, so credentials or
a token in a query string never reach a status condition, an Event or a log line.

`HTTPSession` owns the one shared `aiohttp.ClientSession` (with the guarded resolver) that every
source uses; redirects are never followed by the callers, so a server cannot bounce a request
to a refused address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Names that cloud providers resolve to their metadata service; refused even before DNS so the
# error message names the real problem instead of a resolution failure on a laptop.
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

# Addresses outside link-local that clouds use for their metadata service.
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
    }
)


_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291, deprecated but still routed
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215
# RFC 6052 prefix lengths an operator may carve out of the local-use /48.
_NAT64_LOCAL_PREFIX_LENGTHS = (48, 56, 64, 96)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRejectedError(ValueError):
    """The configured address may not be contacted; the message says why and what to change."""


def _rfc6052_ipv4(value: int, prefix_length: int) -> ipaddress.IPv4Address:
    # RFC 6052 section 2.2: the 32 IPv4 bits follow the prefix, skipping bits 64..71 (the "u"
    # octet), so /48 and /56 split the IPv4 address around it.
    positions = [i for i in range(prefix_length, 128) if not 64 <= i < 72][:32]
    v4 = 0
    for position in positions:
        v4 = (v4 << 1) | ((value >> (127 - position)) & 1)
    return ipaddress.IPv4Address(v4)


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address `address` carries through a standard translation or tunnel.

    A packet to such an address ends up at (or is answered on behalf of) the IPv4 address, so the
    guard must judge that one too.
    """
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFF_FFFF)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _IPV4_TRANSLATED or address in _NAT64_WELL_KNOWN:
        found.append(low32)
    if address in _IPV4_COMPATIBLE and value > 1:  # `::` and `::1` are themselves
        found.append(low32)
    if address in _NAT64_LOCAL_USE:
        found.extend(_rfc6052_ipv4(value, n) for n in _NAT64_LOCAL_PREFIX_LENGTHS)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client); the client is already de-obfuscated
    return tuple(dict.fromkeys(found))


def refused_ip_reason(address: IPAddress) -> str | None:
    """Return why `address` must not be contacted, or None when it may be."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # The same host written in IPv6: every IPv4 rule applies.
            address = address.ipv4_mapped
        else:
            for carried in embedded_ipv4(address):
                # Only the metadata rules: an address reached through a translator is a
                # different host, and the zeros some RFC 6052 layouts read are no danger.
                reason = _metadata_reason(carried)
                if reason is not None:
                    return f"{address} carries the IPv4 address {carried}: {reason}"
    reason = _metadata_reason(address)
    if reason is not None:
        return reason
    if address.is_unspecified or address.is_multicast:
        return f"{address} is not a unicast address"
    return None


def _metadata_reason(address: IPAddress) -> str | None:
    if address.is_link_local:
        return f"{address} is a link-local address (cloud metadata services live there)"
    if address in _METADATA_ADDRESSES:
        return f"{address} is a cloud metadata service address"
    return None


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _looks_numeric(host: str) -> bool:
    # `2852039166`, `0xa9.0xfe.0xa9.0xfe` and `169.254.43518` are IPv4 addresses to
    # getaddrinfo; we accept only canonical dotted quads so the check above sees the real address.
    labels = host.split(".")
    return all(label.isdigit() or label.lower().startswith("0x") for label in labels if label)


_USERINFO = re.compile(r"[^\s/?#@]*@")


def redact(address: object) -> str:
    """`address` fit to repeat in a message: userinfo and query become `***`, the fragment goes.

    Works on text that is not a valid URL too (a refusal must still not echo a password).
    """
    text = str(address)
    try:
        url = yarl.URL(text)
    except (ValueError, TypeError):
        url = None
    if url is not None and url.is_absolute():
        if url.raw_user is not None or url.raw_password is not None:
            url = url.with_password(None).with_user("***")
        if url.raw_query_string:
            url = url.with_query("***")
        return str(url.with_fragment(None))
    text = _USERINFO.sub("***@", text)
    return text.split("#", 1)[0].split("?", 1)[0] + ("?***" if "?" in text else "")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which hosts a configured address may name. An empty allow-list allows every host that
    passes the built-in checks; entries are host names or IP addresses, matched exactly and
    case-insensitively (no wildcards, so an entry cannot accidentally allow a whole domain)."""

    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_hosts(cls, hosts: Iterable[str]) -> AddressPolicy:
        return cls(allowed_hosts=frozenset(h.strip().lower().strip("[]") for h in hosts if h))

    def validate(self, address: str) -> yarl.URL:
        """Return the parsed base URL of `address`, or raise `AddressRejectedError`.

        Messages name the address redacted (`redact`): they reach status conditions and Events
        that the config's author, and others, can read.
        """
        shown = redact(address)
        try:
            url = yarl.URL(address)
        except (ValueError, TypeError) as exc:
            # The parser's own message may quote the part it choked on (a password, say).
            raise AddressRejectedError(f"{shown!r} is not a URL") from exc
        if url.scheme not in ALLOWED_SCHEMES:
            # Without `//`, what the parser calls the scheme may be a user name (`user:pw@h`).
            scheme = url.scheme if url.scheme and "://" in address else "missing"
            raise AddressRejectedError(f"{shown!r}: scheme must be http or https, not {scheme!r}")
        host = (url.raw_host or "").lower().rstrip(".")
        if not host:
            raise AddressRejectedError(f"{shown!r} has no host")
        if url.raw_user is not None or url.raw_password is not None:
            raise AddressRejectedError(
                f"{shown!r} carries credentials in the URL; they would be logged and shown "
                "in status messages"
            )
        if url.raw_query_string or url.raw_fragment:
            raise AddressRejectedError(f"{shown!r}: a base address has no query or fragment")
        if host in METADATA_HOSTNAMES:
            raise AddressRejectedError(f"{shown!r}: {host} is a cloud metadata service name")
        literal = _literal_ip(host)
        if literal is not None:
            reason = refused_ip_reason(literal)
            if reason is not None:
                raise AddressRejectedError(f"{shown!r}: {reason}")
        elif _looks_numeric(host):
            raise AddressRejectedError(
                f"{shown!r}: write IPv4 addresses as four decimal numbers (a.b.c.d)"
            )
        if self.allowed_hosts and host not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts))
            raise AddressRejectedError(
                f"{shown!r}: host {host} is not in the allowed Prometheus hosts ({allowed})"
            )
        return url


class GuardedResolver(AbstractResolver):
    """A DNS resolver that refuses names resolving to link-local or metadata addresses.

    aiohttp skips the resolver for literal IP hosts, which `AddressPolicy` checks instead, so
    together they cover every way a URL can name an address.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            literal = _literal_ip(result["host"])
            reason = refused_ip_reason(literal) if literal is not None else "not an IP address"
            if reason is not None:
                # OSError makes aiohttp report a connection error, which callers already map to
                # "unreachable"; the message still names the refused address.
                raise OSError(f"{host} resolves to a refused address: {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class ConnectTo:
    """curl's `--connect-to HOST:PORT:TO_HOST:TO_PORT`: a request for HOST:PORT connects to
    TO_HOST:TO_PORT instead; its URL, Host header and TLS name stay HOST's.

    For a controller run outside the cluster it caps (the dev cluster, a laptop): a config's
    in-cluster address (`prometheus-server.monitoring.svc:9090`) then reaches a port-forward
    or a local Prometheus unchanged. An operator's setting (`CLIMATIK_OUTBOUND__CONNECT_TO`),
    never a config's; the addresses it leads to are still checked by `GuardedResolver`.
    """

    host: str
    port: int
    to_host: str
    to_port: int

    @classmethod
    def parse(cls, text: str) -> ConnectTo:
        """`HOST:PORT:TO_HOST:TO_PORT` (host names or IPv4 addresses), or ValueError."""
        parts = text.strip().split(":")
        if len(parts) != 4 or not parts[0] or not parts[2]:
            raise ValueError(f"{text!r}: expected HOST:PORT:TO_HOST:TO_PORT")
        ports = []
        for part in (parts[1], parts[3]):
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise ValueError(f"{text!r}: {part!r} is not a port")
            ports.append(int(part))
        return cls(parts[0].lower().rstrip("."), ports[0], parts[2].lower(), ports[1])


class ConnectToResolver(AbstractResolver):
    """Resolves each `ConnectTo` source to its destination's addresses and port; any other
    name as `inner` does. aiohttp connects to the port a resolver returns."""

    def __init__(self, rules: Iterable[ConnectTo], inner: AbstractResolver | None = None) -> None:
        self._rules = {(r.host, r.port): r for r in rules}
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        rule = self._rules.get((host.lower().rstrip("."), port))
        if rule is None:
            return await self._inner.resolve(host, port, family)
        literal = _literal_ip(rule.to_host)
        if literal is not None:
            return [
                ResolveResult(
                    hostname=host,
                    host=str(literal),
                    port=rule.to_port,
                    family=socket.AF_INET6 if literal.version == 6 else socket.AF_INET,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            ]
        results = await self._inner.resolve(rule.to_host, rule.to_port, family)
        return [
            ResolveResult(
                hostname=host,
                host=r["host"],
                port=rule.to_port,
                family=r["family"],
                proto=r["proto"],
                flags=r["flags"],
            )
            for r in results
        ]

    async def close(self) -> None:
        await self._inner.close()


class HTTPSession:
    """Owns the process's shared `aiohttp.ClientSession` for outbound source requests.

    Use as `async with HTTPSession() as session: ...`; the session resolves names through
    `GuardedResolver` (after any `connect_to` rule), keeps no cookies (a scraped server must
    not set state for the next request) and sends an identifying User-Agent.
    """

    def __init__(
        self,
        *,
        user_agent: str = "climatik",
        connection_limit: int = 32,
        connect_to: Iterable[ConnectTo] = (),
    ) -> None:
        self._user_agent = user_agent
        self._connection_limit = connection_limit
        self._connect_to = tuple(connect_to)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("HTTPSession is not open; use it as an async context manager")
        return self._session

    async def __aenter__(self) -> aiohttp.ClientSession:
        inner = ConnectToResolver(self._connect_to) if self._connect_to else None
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(inner), limit=self._connection_limit, ttl_dns_cache=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": self._user_agent},
            raise_for_status=False,
        )
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(self) -> Self:
        """Open without a `with` block (for owners with their own lifecycle); pair with close."""
        await self.__aenter__()
        return self

    async def close(self) -> None:
        await self.__aexit__(None, None, None)
