"""A minimal blocking HTTPS client for bringing a dev cluster up.

Only `climatik.kube` may import kubernetes_asyncio, and `up` needs a handful of plain requests
(readiness probes, creating nodes) before any controller exists, so this speaks JSON over
`http.client` with the admin client certificate. `http.client` ignores proxy variables, which is
what we want for a server on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Response:
    """Status and decoded body (None when the body is not JSON)."""

    status: int
    body: Any


class ApiClient:
    """JSON requests to one HTTPS endpoint, each under a timeout."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ca: Path | None,
        cert: Path | None = None,
        key: Path | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        """Verify the server against `ca`, or skip verification when `ca` is None."""
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if ca is None:
            # Only used for the controller-manager's and scheduler's /healthz on 127.0.0.1,
            # which serve certificates they generate themselves at start.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
        self._host = host
        self._port = port
        self._context = context
        self._timeout_s = timeout_s

    def request(self, method: str, path: str, body: object | None = None) -> Response:
        """Send one request; connection errors propagate as OSError."""
        conn = http.client.HTTPSConnection(
            self._host, self._port, context=self._context, timeout=self._timeout_s
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            decoded: Any = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode("utf-8", errors="replace")
        return Response(status=resp.status, body=decoded)

    def get(self, path: str) -> Response:
        """GET `path`."""
        return self.request("GET", path)

    def post(self, path: str, body: object) -> Response:
        """POST a JSON body to `path`."""
        return self.request("POST", path, body)
