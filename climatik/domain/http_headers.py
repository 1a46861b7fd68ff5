"""Headers a proxy does not pass on: one list for every proxy in the project (the router and
the dev cluster's service proxy)."""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers about one connection, not the message (RFC 9110 section 7.6.1, and the names older
clients still send)."""

NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length"}
"""What a proxy drops from a request it forwards: the hop-by-hop headers, and the two its HTTP
client sets for the new connection itself."""
