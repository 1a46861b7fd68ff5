"""List-then-watch one resource into a sink, forever, surviving everything the network does.

kubernetes-asyncio's ``Watch`` retries a 410 once with the same stale version and then raises, has
no inactivity timeout and hides the raw stream, so the reflector reads the watch stream itself: a
plain long GET whose body is one JSON event per line. The rules (see ``watchstate.py``):

- list (paginated, 500 per page) and hand the sink the full set (``replace``), then watch from the
  list's resourceVersion with ``allowWatchBookmarks=true`` and a random 300-600 s
  ``timeoutSeconds``;
- the client side has its own deadlines: connect 10 s, a socket read timeout and an inactivity
  timeout (~90 s without even a bookmark declares the watch dead and reopens it);
- a watch that ends normally (server timeout) is reopened at once from the last resourceVersion;
- 410 Gone (on open or as an ERROR event) forgets the version, relists and replaces the sink's
  contents, so objects deleted while we were away leave the cache (the sink emits deletes);
- before that relist, and after any other failure (connection refused or reset,
  ``ClientPayloadError``, 5xx, 429, bad JSON), it backs off 0.8 s doubling to 30 s with jitter,
  the count starting over once 120 s pass without a failure: a server answering 410 in a loop
  gets a full list at most every 30-60 s, not as fast as we can send them;
- every response is closed on every path.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import structlog

from climatik.kube.client import ApiError, KubeClient
from climatik.kube.resources import Resource
from climatik.kube.watchstate import Next, WatchEventType, WatchSettings, WatchState

log = structlog.get_logger(__name__)

RawObject = dict[str, Any]
_CONNECT_TIMEOUT_S = 10.0
_LIST_TIMEOUT_S = 60.0


class ReflectorSink(Protocol):
    """Where the reflector puts what it learns (the informer)."""

    def replace(self, objs: list[RawObject], resource_version: str) -> None: ...

    def apply(self, event_type: WatchEventType, obj: RawObject) -> None: ...


class ReflectorMetrics(Protocol):
    """Hooks for the runtime's Prometheus metrics (the kube layer does not import them)."""

    def watch_restarted(self, resource: str, reason: str) -> None: ...

    def relisted(self, resource: str) -> None: ...


class _NoMetrics:
    def watch_restarted(self, resource: str, reason: str) -> None:
        pass

    def relisted(self, resource: str) -> None:
        pass


class WatchSilentError(Exception):
    """The watch delivered nothing for longer than the inactivity timeout."""


class WatchStreamError(Exception):
    """The server ended the watch with a non-410 ERROR event."""


class WatchExpiredError(Exception):
    """The server ended the watch with a 410 Gone ERROR event: relist."""


class Reflector:
    """Keeps ``sink`` equal to the server's view of one resource (optionally one namespace)."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        sink: ReflectorSink,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        settings: WatchSettings | None = None,
        page_size: int = 500,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        metrics: ReflectorMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transform: Callable[[RawObject], RawObject] | None = None,
    ) -> None:
        self.client = client
        # Applied to each object as it arrives, page by page: a list of thousands of objects
        # never holds them all whole (managedFields are often most of an object) at once.
        self.transform = transform
        self._sleep = sleep
        self.resource = resource
        self.sink = sink
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.state = WatchState(settings, clock=clock, rng=rng)
        self.metrics: ReflectorMetrics = metrics or _NoMetrics()
        self.name = f"{resource.plural}.{resource.group or 'core'}" + (
            f"/{namespace}" if namespace else ""
        )
        self.lists_done = 0
        self.watches_opened = 0
        self._log = log.bind(reflector=self.name)

    async def run(self) -> None:
        """List and watch until cancelled."""
        while True:
            try:
                if self.state.needs_relist:
                    await self._list()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except ApiError as error:
                if error.is_gone:
                    await self._relist_after_gone(error.message)
                    continue
                await self._back_off("api_error", error)
            except WatchExpiredError as error:
                await self._relist_after_gone(str(error))
            except WatchSilentError as error:
                # Silence is not overload: reopen at once (the next silence costs another timeout).
                self._log.warning(
                    "watch_went_silent", timeout_s=self.state.settings.inactivity_timeout_s
                )
                self.metrics.watch_restarted(self.name, "silent")
                del error
            except (
                aiohttp.ClientError,
                TimeoutError,
                OSError,
                ValueError,
                WatchStreamError,
            ) as error:
                await self._back_off(type(error).__name__, error)

    async def _back_off(self, reason: str, error: BaseException) -> None:
        delay_s = self.state.failed()
        self._log.warning(
            "watch_failed",
            reason=reason,
            error=str(error) or type(error).__name__,
            retry_in_s=round(delay_s, 3),
            failures=self.state.consecutive_failures,
        )
        self.metrics.watch_restarted(self.name, "error")
        await self._sleep(delay_s)

    async def _relist_after_gone(self, message: str) -> None:
        """Forget the version and back off like any failure, then the loop relists."""
        self.state.gone()
        delay_s = self.state.failed()
        self._log.info(
            "watch_expired",
            message=message,
            relist_in_s=round(delay_s, 3),
            failures=self.state.consecutive_failures,
        )
        self.metrics.watch_restarted(self.name, "gone")
        await self._sleep(delay_s)

    async def _list(self) -> None:
        """A full, paginated list; one unpaginated list instead if the continue token expires."""
        items: list[RawObject] = []
        continue_token: str | None = None
        resource_version = ""
        limit: int | None = self.page_size
        while True:
            try:
                page = await self.client.list(
                    self.resource,
                    self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    limit=limit,
                    continue_token=continue_token,
                    timeout_s=_LIST_TIMEOUT_S,
                )
            except ApiError as error:
                if error.is_gone and continue_token is not None:
                    items, continue_token, limit = [], None, None
                    continue
                raise
            if not resource_version or continue_token is None:
                resource_version = str(page.get("metadata", {}).get("resourceVersion", ""))
            kind = str(page.get("kind", "")).removesuffix("List")
            for item in page.get("items") or ():
                # List items lack kind/apiVersion; fill them in so listed and watched objects match.
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", self.resource.api_version)
                items.append(self.transform(item) if self.transform is not None else item)
            continue_token = page.get("metadata", {}).get("continue") or None
            if continue_token is None:
                break
        self.sink.replace(items, resource_version)
        if self.lists_done:
            self.metrics.relisted(self.name)
        self.lists_done += 1
        self.state.list_completed(resource_version)
        self.state.succeeded()
        self._log.debug("list_completed", objects=len(items), resource_version=resource_version)

    async def _watch(self) -> None:
        """One watch connection, from open to its end; returns when the server ends it cleanly."""
        server_timeout_s = self.state.server_timeout_s()
        inactivity_s = self.state.settings.inactivity_timeout_s
        client_timeout = aiohttp.ClientTimeout(
            total=server_timeout_s + inactivity_s,
            connect=_CONNECT_TIMEOUT_S,
            sock_connect=_CONNECT_TIMEOUT_S,
            sock_read=inactivity_s + 5.0,
        )
        query = {
            "watch": "true",
            "resourceVersion": self.state.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": server_timeout_s,
            "labelSelector": self.label_selector,
            "fieldSelector": self.field_selector,
        }
        async with asyncio.timeout(_CONNECT_TIMEOUT_S + _LIST_TIMEOUT_S):
            response = await self.client.open_stream(
                self.resource.path(self.namespace), query, client_timeout
            )
        try:
            self.watches_opened += 1
            self.state.watch_opened()
            self.state.succeeded()
            buffer = b""
            while True:
                try:
                    async with asyncio.timeout(max(self.state.seconds_until_silent(), 0.0)):
                        chunk = await response.content.readany()
                except TimeoutError:
                    raise WatchSilentError from None
                if not chunk:
                    self.metrics.watch_restarted(self.name, "closed")
                    return  # the server ended the watch (timeoutSeconds): resume from our version
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._handle_line(line)
        finally:
            response.close()

    def _handle_line(self, line: bytes) -> None:
        """Feed one event; raise when the stream must end (relist, or reconnect)."""
        event = json.loads(line)
        event_type = str(event.get("type", ""))
        obj: RawObject = event.get("object") or {}
        decision = self.state.event_received(event_type, obj)
        if decision is Next.DELIVER:
            if self.transform is not None:
                obj = self.transform(obj)
            self.sink.apply(WatchEventType(event_type), obj)
        elif decision is Next.RELIST:
            raise WatchExpiredError(str(obj.get("message") or "410 Gone"))
        elif decision is not Next.SKIP:
            raise WatchStreamError(str(obj.get("message") or obj))
