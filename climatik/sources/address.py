"""Guards for addresses that come from user configuration (a PowerCappingConfig's Prometheus).

A Prometheus address in a custom resource is chosen by whoever may create that resource, so the
controller must not become a way to reach the cloud metadata service (169.254.169.254 and
friends) or arbitrary hosts. This module guarantees, at request time:

- the scheme is `http` or `https`, the URL has a host and carries no credentials, query or
  fragment (credentials belong in Secrets, and would leak into logs and status messages);
- the host is not a link-local or metadata address, whether written literally (IPv4, IPv6,
  IPv4-mapped IPv6, legacy numeric forms) or reached through a DNS name: `GuardedResolver`
  checks every address a name resolves to, so a name pointing at 169.254.169.254 is refused too;
- when an allow-list of hosts is configured, the host is on it.

`HTTPSession` owns the one shared `aiohttp.ClientSession` (with the guarded resolver) that every
source uses; redirects are never followed by the callers, so a server cannot bounce a request
to a refused address.
"""

from __future__ import annotations

import ipaddress
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


class AddressRejectedError(ValueError):
    """The configured address may not be contacted; the message says why and what to change."""


def refused_ip_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Return why `address` must not be contacted, or None when it may be."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return f"{address} is a link-local address (cloud metadata services live there)"
    if address in _METADATA_ADDRESSES:
        return f"{address} is a cloud metadata service address"
    if address.is_unspecified or address.is_multicast:
        return f"{address} is not a unicast address"
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
        """Return the parsed base URL of `address`, or raise `AddressRejectedError`."""
        try:
            url = yarl.URL(address)
        except (ValueError, TypeError) as exc:
            raise AddressRejectedError(f"{address!r} is not a URL: {exc}") from exc
        if url.scheme not in ALLOWED_SCHEMES:
            raise AddressRejectedError(
                f"{address!r}: scheme must be http or https, not {url.scheme or 'missing'!r}"
            )
        host = (url.raw_host or "").lower().rstrip(".")
        if not host:
            raise AddressRejectedError(f"{address!r} has no host")
        if url.raw_user is not None or url.raw_password is not None:
            raise AddressRejectedError(
                f"{address!r} carries credentials in the URL; they would be logged and shown "
                "in status messages"
            )
        if url.raw_query_string or url.raw_fragment:
            raise AddressRejectedError(f"{address!r}: a base address has no query or fragment")
        if host in METADATA_HOSTNAMES:
            raise AddressRejectedError(f"{address!r}: {host} is a cloud metadata service name")
        literal = _literal_ip(host)
        if literal is not None:
            reason = refused_ip_reason(literal)
            if reason is not None:
                raise AddressRejectedError(f"{address!r}: {reason}")
        elif _looks_numeric(host):
            raise AddressRejectedError(
                f"{address!r}: write IPv4 addresses as four decimal numbers (a.b.c.d)"
            )
        if self.allowed_hosts and host not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts))
            raise AddressRejectedError(
                f"{address!r}: host {host} is not in the allowed Prometheus hosts ({allowed})"
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


class HTTPSession:
    """Owns the process's shared `aiohttp.ClientSession` for outbound source requests.

    Use as `async with HTTPSession() as session: ...`; the session resolves names through
    `GuardedResolver`, keeps no cookies (a scraped server must not set state for the next
    request) and sends an identifying User-Agent.
    """

    def __init__(self, *, user_agent: str = "climatik", connection_limit: int = 32) -> None:
        self._user_agent = user_agent
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("HTTPSession is not open; use it as an async context manager")
        return self._session

    async def __aenter__(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(), limit=self._connection_limit, ttl_dns_cache=30
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
