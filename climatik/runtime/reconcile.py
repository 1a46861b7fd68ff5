"""The reconcile contract and the worker loop that drives it (controller-runtime's semantics).

A reconciler gets a key (``namespace/name``), reads what it needs from informer caches, acts, and
returns a :class:`Result`. The worker turns the outcome into queue operations:

- ``Result()``: done; the key's failure history is forgotten.
- ``Result(requeue_after=s)``: done, look again in ``s`` seconds (polling external signals such as
  Prometheus or a carbon API); failure history forgotten. The ``s`` seconds count from when the
  key was due, not from when a worker took it or finished: a key that waited behind thousands of
  others due at the same moment is not pushed back by its wait every round. And ``s`` is a
  promise of at most ``s`` between two reconciles: the key is queued early by the recent
  lateness of the controller's reconciles (``climatik.runtime.lateness``).
- :class:`TerminalError`: the object is wrong in a way retrying cannot fix (logged, not retried;
  the next change to the object enqueues it again).
- :class:`NotLeaderError` (the write gate closed because leadership ended): logged, not retried.
- any other exception: logged with the key and a traceback, retried with per-key backoff (the
  one way to ask for backoff: there is no "requeue" result, as controller-runtime deprecated its
  ``Requeue``).
- a reconcile still running after the controller's ``reconcile_timeout_s`` is cancelled, logged
  (``reconcile_timed_out``), counted (``climatik_reconcile_total{result="timed_out"}``) and
  retried with per-key backoff: no key holds a worker forever, whatever it waits on.

Each reconcile gets a fresh ``reconcile_id``, bound with ``controller`` and ``key`` to structlog's
context variables, so every log line the reconciler (or anything it calls) writes carries them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from climatik.kube.client import KubeClient, NotLeaderError
from climatik.kube.events import EventRecorder
from climatik.kube.fields import Fields
from climatik.kube.informer import EventHandlers, Informer
from climatik.kube.resources import Resource
from climatik.kube.store import object_key
from climatik.kube.workqueue import ShutDownError, WorkQueue
from climatik.reconcilers.result import Result, TerminalError
from climatik.runtime.lateness import Lateness
from climatik.runtime.metrics import RuntimeMetrics
from climatik.runtime.settings import ControllerSettings

__all__ = [
    "Controller",
    "ControllerContext",
    "ControllerFactory",
    "Reconciler",
    "Result",
    "TerminalError",
    "enqueue_handlers",
    "process_one",
    "run_worker",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Reconciler(Protocol):
    async def reconcile(self, key: str) -> Result: ...


DEFAULT_RECONCILE_TIMEOUT_S = 10.0
"""The deadline of one reconcile when a controller names none: well inside the power-cap
controller's 15 s interval, far beyond a healthy reconcile (milliseconds)."""


@dataclass
class Controller:
    """A named reconciler with its queue, worker count and reconcile deadline.

    Several workers reconcile different keys concurrently (the queue never hands one key to two
    workers), so a reconciler keeps per-key state in dicts keyed by its key and holds nothing
    across an ``await`` that another key's reconcile could change. ``reconcile_timeout_s=None``
    turns the deadline off.
    """

    name: str
    reconciler: Reconciler
    queue: WorkQueue[str]
    workers: int = 1
    reconcile_timeout_s: float | None = DEFAULT_RECONCILE_TIMEOUT_S
    lateness: Lateness = field(default_factory=Lateness)
    """How late its polled reconciles finish after they were due, recently."""


def enqueue_handlers(
    queue: WorkQueue[str], key_of: Callable[[Mapping[str, Any]], str | None] = object_key
) -> EventHandlers:
    """Informer handlers that enqueue ``key_of(obj)`` on every add, update and delete."""

    def add(obj: Mapping[str, Any]) -> None:
        key = key_of(obj)
        if key is not None:
            queue.add(key)

    return EventHandlers(on_add=add, on_update=lambda _old, new: add(new), on_delete=add)


_PROCESS_TAG = os.urandom(3).hex()
_RECONCILES = itertools.count(1)


def next_reconcile_id() -> str:
    """Unique in this process and unlikely to repeat across restarts: a random tag per process
    and a counter. Not a fresh random number per reconcile: at 5,000 configs a getrandom
    syscall per reconcile cost 2.5 % of the controller's CPU."""
    return f"{_PROCESS_TAG}-{next(_RECONCILES):x}"


async def process_one(controller: Controller, key: str, metrics: RuntimeMetrics) -> str:
    """Reconcile one key taken from the queue and settle it; return the result label."""
    queue = controller.queue
    reconcile_id = next_reconcile_id()
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(
        controller=controller.name, key=key, reconcile_id=reconcile_id
    ):
        deadline = asyncio.timeout(controller.reconcile_timeout_s)
        try:
            async with deadline:
                result = await controller.reconciler.reconcile(key)
        except asyncio.CancelledError:
            raise
        except NotLeaderError as error:
            # Leadership ended mid-reconcile; the gate stopped the write. Not a bug: no
            # traceback, no retry (the queue is shutting down and the next leader relists).
            log.warning("reconcile_stopped_not_leader", error=str(error))
            outcome = "not_leader"
        except TerminalError as error:
            log.error("reconcile_failed_terminally", error=str(error))
            queue.forget(key)
            outcome = "terminal_error"
        except Exception as error:
            retries = queue.num_requeues(key) + 1
            if isinstance(error, TimeoutError) and deadline.expired():
                # Cancelled at the deadline. No traceback: where it was cut says nothing, and
                # a dead Prometheus would fill the log with them.
                log.warning(
                    "reconcile_timed_out", timeout_s=controller.reconcile_timeout_s, retries=retries
                )
                outcome = "timed_out"
            else:
                log.exception("reconcile_failed", error=str(error), retries=retries)
                outcome = "error"
            queue.add_rate_limited(key)
        else:
            queue.forget(key)
            if result.requeue_after is not None:
                late_s = queue.since_due_s(key)
                controller.lateness.observe(late_s)
                lead_s = controller.lateness.lead_s(result.requeue_after)
                metrics.requeue_led(controller.name, lead_s)
                queue.add_after(key, result.requeue_after - late_s - lead_s)
                outcome = "requeue_after"
            else:
                outcome = "success"
        log.debug("reconciled", outcome=outcome, seconds=round(time.perf_counter() - started, 3))
    metrics.reconciled(controller.name, outcome, time.perf_counter() - started)
    return outcome


async def run_worker(controller: Controller, metrics: RuntimeMetrics) -> None:
    """Take keys until the queue shuts down; a key is always marked done, even on cancel."""
    queue = controller.queue
    while True:
        try:
            key = await queue.get()
        except ShutDownError:
            return
        try:
            await process_one(controller, key, metrics)
        finally:
            queue.done(key)


class ControllerContext(Protocol):
    """What a controller factory may ask the manager for while wiring itself up."""

    @property
    def namespace(self) -> str | None: ...

    @property
    def identity(self) -> str: ...

    @property
    def controller_settings(self) -> ControllerSettings:
        """The built-in controllers' settings, read once at start: factories take theirs here,
        never from the environment."""
        ...

    @property
    def client(self) -> KubeClient: ...

    @property
    def events(self) -> EventRecorder: ...

    @property
    def metrics(self) -> RuntimeMetrics: ...

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, Callable[[Mapping[str, Any]], list[str]]] | None = None,
        fields: Fields | None = None,
    ) -> Informer:
        """A shared informer (one per resource, namespace and selector).

        It caches only the union of the `fields` its consumers read (`climatik.kube.fields`),
        whole objects when one of them names none.

        A controller's workers start once the informers its factory asked for have synced, so
        a factory must ask here, during its own call, for every informer it reads: one obtained
        later, or handed over from another factory, is not waited for.
        """
        ...

    def new_queue(
        self, name: str, *, max_in_flight_per_namespace: int | None = None
    ) -> WorkQueue[str]:
        """A work queue, fair across namespaces; with `max_in_flight_per_namespace`, no
        namespace holds more of the controller's workers at once."""
        ...

    def add_cleanup(self, cleanup: Callable[[], Awaitable[None]]) -> None: ...

    def shared(self, kind: type[T], make: Callable[[], T]) -> T:
        """The manager's one object of `kind`, made by `make` the first time a factory asks:
        what controllers of one process share (metrics on its registry, the hints the GPU-tuning
        controller leaves the power-cap controller), living as long as the manager."""
        ...

    def add_service(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None: ...


ControllerFactory = Callable[[ControllerContext], Controller]
