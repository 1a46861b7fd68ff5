"""The TLS server that kube-apiserver calls for admission reviews.

kube-apiserver only calls webhooks over HTTPS and verifies the serving certificate against the
`caBundle` of the webhook configuration. This server:

- answers `POST <path>` with whatever the handler returns for the decoded AdmissionReview, as
  JSON, within the API server's timeout (the handler is synchronous and does no I/O);
- answers 400 to any body that is not a well-formed `admission.k8s.io/v1` AdmissionReview (not
  JSON, nested too deeply to decode, not an object, a `request` that is not an object, a `uid`
  that is not a non-empty string); the API server then applies the webhook's failurePolicy
  (`Ignore` for placement). Never a 500, never a traceback in the answer;
- a handler that raises, or answers something that cannot be sent, gets the safe answer
  instead: allowed, no patch (logged as `admission_handler_failed`);
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
ADMISSION_API_VERSION = "admission.k8s.io/v1"
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


def decode_admission_review(body: bytes) -> dict[str, Any] | str:
    """The AdmissionReview in `body`, or a short reason why it is not a well-formed one."""
    try:
        decoded = json.loads(body)
    except RecursionError:
        return "nested too deeply"
    except ValueError:  # also UnicodeDecodeError
        return "not JSON"
    if not isinstance(decoded, dict):
        return "not a JSON object"
    if (
        decoded.get("apiVersion") != ADMISSION_API_VERSION
        or decoded.get("kind") != "AdmissionReview"
    ):
        return f"apiVersion/kind must be {ADMISSION_API_VERSION} AdmissionReview"
    request = decoded.get("request")
    if not isinstance(request, dict):
        return "request is not an object"
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return "request.uid is not a non-empty string"
    return decoded


def allow_unchanged(uid: str) -> dict[str, Any]:
    """The answer that admits the object as it is."""
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": True},
    }


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
        except web.HTTPException as error:  # larger than MAX_REVIEW_BYTES
            log.warning("admission_review_malformed", error=str(error)[:200])
            return web.json_response({"error": "malformed AdmissionReview"}, status=400)
        decoded = decode_admission_review(body)
        if isinstance(decoded, str):
            log.warning("admission_review_malformed", error=decoded)
            return web.json_response({"error": f"not an AdmissionReview: {decoded}"}, status=400)
        uid = decoded["request"]["uid"]
        try:
            text = json.dumps(dict(handler(decoded)))
        except Exception as error:
            # A bug of ours must not turn into a 500 (or a traceback on the wire): admit the pod
            # unchanged, as failurePolicy Ignore would.
            log.exception("admission_handler_failed", uid=uid, error=str(error)[:200])
            text = json.dumps(allow_unchanged(uid))
        return web.Response(text=text, content_type="application/json")

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
