"""A probe controller the runtime integration tests load into real `climatik run` processes.

It watches ConfigMaps labelled ``climatik.test/probe=true`` in the run's namespace and, on every
reconcile, writes its own identity and a counter into the object with a merge patch, then asks to
be called again shortly. Which replica's identity appears in the object shows who writes; a write
from a replica that lost the lease would be visible to the test's own watch.
"""

from __future__ import annotations

import itertools

import structlog

from climatik.kube.client import KubeClient
from climatik.kube.informer import EventHandlers
from climatik.kube.resources import CONFIGMAPS
from climatik.kube.store import split_key
from climatik.runtime.reconcile import Controller, ControllerContext, Result, enqueue_handlers

PROBE_LABEL = "climatik.test/probe"
log = structlog.get_logger(__name__)


class ProbeReconciler:
    def __init__(self, client: KubeClient, identity: str) -> None:
        self.client = client
        self.identity = identity
        self.counter = itertools.count(1)

    async def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        seq = next(self.counter)
        await self.client.merge_patch(
            CONFIGMAPS, name, {"data": {"writer": self.identity, "seq": str(seq)}}, namespace
        )
        log.info("probe_wrote", seq=seq)
        return Result(requeue_after=0.3)


def factory(ctx: ControllerContext) -> Controller:
    informer = ctx.informer(CONFIGMAPS, label_selector=f"{PROBE_LABEL}=true")
    queue = ctx.new_queue("probe")
    # Only adds: its own writes must not re-trigger it (requeue_after paces it instead).
    informer.add_handlers(EventHandlers(on_add=enqueue_handlers(queue).on_add))
    return Controller("probe", ProbeReconciler(ctx.client, ctx.identity), queue)
