"""The TLS server that kube-apiserver calls for admission reviews.

kube-apiserver only calls webhooks over HTTPS and verifies the serving certificate against the
`caBundle` of the webhook configuration. This server:

- answers `POST <path>` with whatever the handler returns for the decoded AdmissionReview, as
  JSON, within the API server's timeout (the handler is synchronous and does no I/O);
- answers malformed bodies with 400 (the API server then applies the webhook's failurePolicy,
  `Ignore` for placement), never with a traceback;
- reloads the certificate and key when their files change (cert-manager and Secret volumes
  rotate them in place), so a rotation never needs a restart; new TLS connections use the new
  pair, established ones finish on the old;
- serves `GET /healthz` for probes; TLS 1.2 or newer only.

`start_webhook_server` starts it standalone (tests, or a manager that owns no other server) and
returns a handle with the bound port and `stop()`.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

AdmissionHandler = Callable[[Mapping[str, Any]], Mapping[str, Any]]
DEFAULT_PATH = "/mutate-pods"
MAX_REVIEW_BYTES = 4 * 1024 * 1024  # a Pod with many containers and env vars, with margin


class _ReloadingTLS:
    """An SSL context whose certificate pair is reloaded when either file's mtime changes."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp: tuple[float, float] | None = None
        self.maybe_reload()

    def _mtimes(self) -> tuple[float, float]:
        return (os.stat(self.cert_file).st_mtime, os.stat(self.key_file).st_mtime)

    def maybe_reload(self) -> None:
        try:
            stamp = self._mtimes()
        except OSError as error:
            if self._stamp is None:
                raise
            log.warning("webhook_certificate_unreadable", error=str(error))
            return
        if stamp == self._stamp:
            return
        try:
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            if self._stamp is None:
                raise
            # Half-written files during a rotation: keep serving the old pair, retry next time.
            log.warning("webhook_certificate_reload_failed", error=str(error))
            return
        if self._stamp is not None:
            log.info("webhook_certificate_reloaded", cert_file=str(self.cert_file))
        self._stamp = stamp


class WebhookServer:
    """A running admission webhook server; `port` is the bound port."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, path: str) -> None:
        self._runner: web.AppRunner | None = runner
        self.host = host
        self.port = port
        self.path = path

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.path}"

    async def stop(self) -> None:
        """Stop accepting connections and close the open ones (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def webhook_app(
    handler: AdmissionHandler, tls: _ReloadingTLS | None = None, path: str = DEFAULT_PATH
) -> web.Application:
    """The aiohttp application (exposed for mounting into another server)."""

    async def review(request: web.Request) -> web.Response:
        if tls is not None:
            tls.maybe_reload()
        try:
            body = await request.read()
            decoded = json.loads(body)
        except (ValueError, web.HTTPException) as error:
            log.warning("admission_review_malformed", error=str(error)[:200])
            return web.json_response({"error": "malformed AdmissionReview"}, status=400)
        if not isinstance(decoded, dict) or not isinstance(decoded.get("request"), dict):
            return web.json_response({"error": "not an AdmissionReview"}, status=400)
        answer = handler(decoded)
        return web.json_response(dict(answer))

    async def healthz(request: web.Request) -> web.Response:
        del request
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post(path, review)
    app.router.add_get("/healthz", healthz)
    return app


async def start_webhook_server(
    handler: AdmissionHandler,
    host: str,
    port: int,
    cert_file: str | Path,
    key_file: str | Path,
    *,
    path: str = DEFAULT_PATH,
) -> WebhookServer:
    """Serve `handler` over HTTPS on `host:port` (0 picks a free port) until `stop()`."""
    tls = _ReloadingTLS(Path(cert_file), Path(key_file))
    runner = web.AppRunner(webhook_app(handler, tls, path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls.context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    server = site._server  # aiohttp exposes the bound port only here
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        bound = int(sockets[0].getsockname()[1])
    log.info("webhook_server_started", host=host, port=bound, path=path)
    return WebhookServer(runner, host, bound, path)
