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
  pair, established ones finish on the old. A pair that does not load (half-written, garbage,
  a key that does not match) never replaces the one being served;
- serves `GET /healthz` for probes; TLS 1.2 or newer only.

`serve_webhook` is the long-running form a manager service uses: a missing, unreadable or invalid
pair at start is logged (`webhook_certificate_unavailable`), reported through `on_certificate`
(the `..._certificate_ok` gauge) and tried again every `poll_s`; the server starts listening as
soon as a valid pair is there, so a certificate problem never stops the process (the webhook is
`failurePolicy: Ignore`; power capping must go on). `start_webhook_server` starts it at once
(tests, tools) and raises `WebhookCertificateError` when the pair does not load.
"""

from __future__ import annotations

import asyncio
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
CERTIFICATE_POLL_S = 10.0


class WebhookCertificateError(Exception):
    """The serving certificate and key cannot be loaded."""


class _ReloadingTLS:
    """An SSL context serving the newest loadable pair from two files, reloaded when either
    file's mtime changes (two `stat` calls per check).

    A pair is checked in a scratch context before it goes into the served one, so a bad pair
    never replaces a good one. `ok` says whether the files on disk are what is served;
    `loaded` whether any pair is; `problem` why not. `on_state(ok)` hears every check that
    ends in a state, so a gauge follows it.
    """

    def __init__(
        self, cert_file: Path, key_file: Path, *, on_state: Callable[[bool], None] | None = None
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.loaded = False
        self.problem: str | None = "not loaded yet"
        self._on_state = on_state
        self._tried: tuple[float, float] | None = None  # mtimes of the files last tried

    @property
    def ok(self) -> bool:
        return self.problem is None

    def _mtimes(self) -> tuple[float, float]:
        return (os.stat(self.cert_file).st_mtime, os.stat(self.key_file).st_mtime)

    def maybe_reload(self) -> bool:
        """Load the pair if the files changed since the last try; return `ok`."""
        try:
            stamp = self._mtimes()
        except OSError as error:
            self._tried = None  # the same files reappearing are tried again
            self._failed(f"cannot read {error.filename or 'the pair'}: {error.strerror or error}")
            return False
        if stamp == self._tried:
            return self.ok
        self._tried = stamp
        try:
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(self.cert_file, self.key_file)
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError, ValueError) as error:
            self._failed(f"cannot load {self.cert_file.name}/{self.key_file.name}: {error}")
            return False
        if self.loaded:
            log.info("webhook_certificate_reloaded", cert_file=str(self.cert_file))
        elif self.problem != "not loaded yet":
            log.info("webhook_certificate_loaded", cert_file=str(self.cert_file))
        self.loaded = True
        self.problem = None
        if self._on_state is not None:
            self._on_state(True)
        return True

    def _failed(self, problem: str) -> None:
        repeated = problem == self.problem
        self.problem = problem
        if self._on_state is not None:
            self._on_state(False)
        if repeated:
            return  # said once; the gauge keeps saying it
        if self.loaded:
            # Half-written files during a rotation, or a bad new pair: the old one serves on.
            log.warning("webhook_certificate_reload_failed", error=problem, serving="previous pair")
        else:
            log.warning(
                "webhook_certificate_unavailable",
                error=problem,
                cert_file=str(self.cert_file),
                key_file=str(self.key_file),
                action="not serving until a valid pair appears; checking again periodically",
            )


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
    """Serve `handler` over HTTPS on `host:port` (0 picks a free port) until `stop()`.

    Raises `WebhookCertificateError` when the pair cannot be loaded now; `serve_webhook` waits.
    """
    tls = _ReloadingTLS(Path(cert_file), Path(key_file))
    if not tls.maybe_reload():
        raise WebhookCertificateError(tls.problem)
    return await _listen(handler, tls, host, port, path)


async def serve_webhook(
    handler: AdmissionHandler,
    host: str,
    port: int,
    cert_file: str | Path,
    key_file: str | Path,
    *,
    path: str = DEFAULT_PATH,
    poll_s: float = CERTIFICATE_POLL_S,
    on_certificate: Callable[[bool], None] | None = None,
    on_serving: Callable[[WebhookServer], None] | None = None,
) -> None:
    """Serve `handler` over HTTPS until cancelled, from the moment a valid pair is in place.

    Until then the pair is tried every `poll_s` (logged once per distinct problem); afterwards
    the files are checked every `poll_s` too, not only when a review arrives, so
    `on_certificate(ok)` follows a bad rotation even on a quiet webhook.
    """
    tls = _ReloadingTLS(Path(cert_file), Path(key_file), on_state=on_certificate)
    server: WebhookServer | None = None
    try:
        while True:
            tls.maybe_reload()
            if server is None and tls.loaded:
                server = await _listen(handler, tls, host, port, path)
                if on_serving is not None:
                    on_serving(server)
            await asyncio.sleep(poll_s)
    finally:
        if server is not None:
            await server.stop()


async def _listen(
    handler: AdmissionHandler, tls: _ReloadingTLS, host: str, port: int, path: str
) -> WebhookServer:
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
