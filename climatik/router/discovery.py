"""Endpoint discovery: the Service's EndpointSlices, through the project's own informer.

The informer lists and watches only the slices labelled `kubernetes.io/service-name=<service>`
in one namespace; on every change the table's upstreams are rebuilt from all of them (a Service
has a handful of slices, and a rebuild is a pure pass over them), so an endpoint that leaves a
slice, turns unready or loses its slice stops being picked at once.
"""

from __future__ import annotations

from climatik.kube.client import KubeClient
from climatik.kube.informer import EventHandlers, Informer, strip_managed_fields
from climatik.kube.resources import ENDPOINT_SLICES
from climatik.kube.store import FrozenMapping
from climatik.kube.watchstate import WatchSettings
from climatik.router.metrics import RouterMetrics
from climatik.router.slices import SERVICE_NAME_LABEL, upstreams_from_slices
from climatik.router.table import EndpointTable


class EndpointDiscovery:
    """Keeps `table`'s upstreams equal to what the Service's slices say. Run `informer.run()`."""

    def __init__(
        self,
        client: KubeClient,
        table: EndpointTable,
        *,
        namespace: str,
        service: str,
        port_name: str | None = None,
        metrics: RouterMetrics | None = None,
        watch: WatchSettings | None = None,
    ) -> None:
        self._table = table
        self._port_name = port_name
        self._metrics = metrics
        self.informer = Informer(
            client,
            ENDPOINT_SLICES,
            namespace=namespace,
            label_selector=f"{SERVICE_NAME_LABEL}={service}",
            settings=watch,
            transform=strip_managed_fields,
        )
        self.informer.add_handlers(
            EventHandlers(on_add=self._changed, on_update=self._updated, on_delete=self._changed)
        )

    def _updated(self, old: FrozenMapping, new: FrozenMapping) -> None:
        del old
        self._changed(new)

    def _changed(self, obj: FrozenMapping) -> None:
        del obj
        upstreams = upstreams_from_slices(self.informer.store.objects(), self._port_name)
        self._table.set_upstreams(upstreams)
        if self._metrics is not None:
            healthy = sum(u.healthy for u in upstreams)
            self._metrics.endpoints.labels("true").set(healthy)
            self._metrics.endpoints.labels("false").set(len(upstreams) - healthy)

    def has_synced(self) -> bool:
        return self.informer.has_synced()

    async def run(self) -> None:
        await self.informer.run()
