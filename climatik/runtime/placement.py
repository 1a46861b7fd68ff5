"""Wiring of rack placement: the placement reconciler, its live sources, and the webhook it feeds.

The reconciler (leader only, like every writer) scores racks and keeps pod-deletion costs
current; the webhook server runs on every replica and answers from the reconciler's snapshot.
A replica that is not leading has an empty snapshot and admits pods unchanged, which the
webhook's `failurePolicy: Ignore` makes harmless: placement is a preference, never a gate.
For the same reason a missing, unreadable or invalid certificate pair never stops the process:
it is logged (`webhook_certificate_unavailable`), shown by
`climatik_placement_webhook_certificate_ok` = 0 and tried again every `CERTIFICATE_POLL_S`; the
webhook starts serving as soon as the pair is valid, and power capping runs on meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import structlog

from climatik.domain.config import CoolingMode, PowerCappingConfig
from climatik.kube.cache import Cache
from climatik.kube.informer import EventHandlers, Informer
from climatik.kube.resources import CONFIGMAPS, NODES
from climatik.kube.store import FrozenMapping, index_by_namespace
from climatik.kube.workqueue import WorkQueue
from climatik.reconcilers.cached_fields import NODE_FIELDS
from climatik.reconcilers.placement import PlacementReconciler
from climatik.reconcilers.placement_metrics import PlacementMetrics
from climatik.reconcilers.placement_webhook import PlacementSnapshot, PlacementWebhook
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.settings import PlacementSettings
from climatik.runtime.capping import (
    SharedSession,
    config_handlers,
    configs_in_namespace,
    namespace_share,
    workload_caches,
)
from climatik.runtime.reconcile import Controller, ControllerContext
from climatik.runtime.webhook import WebhookServer, serve_webhook
from climatik.sources.address import AddressPolicy
from climatik.sources.cooling import (
    CoolingController,
    DryRunCoolingController,
    HttpCoolingController,
)
from climatik.sources.power_queries import power_query_config_for
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_pool import PrometheusPool
from climatik.sources.promql import QueryTemplateError
from climatik.sources.racks import (
    PrometheusRackSignalSource,
    RackSignalQueries,
    RackSignalSource,
    StaticRackSignalSource,
    rack_queries_for,
)

log = structlog.get_logger(__name__)


CERTIFICATE_POLL_S = 10.0


class PrometheusRackSources:
    """`signal_source` for the live controller: a Prometheus rack source per config.

    The config's `powerMeasurement` gives the address, the rack power and inlet queries and the
    power preset (for the service series); the site-wide extra queries come from settings. A
    config with no Prometheus to ask gets a source without data (placement then ranks by what
    it knows, and the condition says `NoRackData`), never an error that stops capping.
    """

    def __init__(
        self,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        settings: PlacementSettings,
        prometheus: PrometheusPool | None = None,
    ) -> None:
        self._settings = settings
        # Shared answers and a breaker per address across configs (one layer per controller).
        self._prometheus = prometheus or PrometheusPool(session_factory)
        # One for every config without a Prometheus: its history (of nothing) is one, too.
        self._no_data = StaticRackSignalSource()

    async def __call__(self, config: PowerCappingConfig) -> RackSignalSource:
        measurement = config.power_measurement
        address = config.prometheus_address(self._settings.prometheus_address)
        if address is None:
            return self._no_data
        client = self._prometheus.querier(
            address,
            PrometheusSettings(
                timeout_s=self._settings.prometheus_timeout_s,
                max_sample_age_s=config.fail_safe.max_metric_age_s,
                address_policy=AddressPolicy.from_hosts(self._settings.allowed_hosts),
            ),
        )
        site = RackSignalQueries(
            exhaust_temperature_query=self._settings.exhaust_temperature_query,
            airflow_query=self._settings.airflow_query,
            cooling_power_query=self._settings.cooling_power_query,
            supply_temperature_query=self._settings.supply_temperature_query,
            rack_label=self._settings.rack_label,
            history_window_s=self._settings.history_window_s,
        )
        try:
            queries = rack_queries_for(measurement, site)
            power = power_query_config_for(measurement)
        except QueryTemplateError:
            # The power-cap reconciler reports the bad template; placement reads nothing.
            return self._no_data
        return PrometheusRackSignalSource(client, queries, power=power)


class CoolingControllers:
    """`cooling` for the live controller: the config's webhook in Webhook mode, else dry run."""

    def __init__(
        self,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        settings: PlacementSettings,
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self.dry_run = DryRunCoolingController()

    async def __call__(self, config: PowerCappingConfig) -> CoolingController:
        url = config.cooling.webhook_url
        if config.cooling.mode is not CoolingMode.WEBHOOK or url is None:
            return self.dry_run
        return HttpCoolingController(
            await self._session_factory(),
            str(url),  # the API layer may hand over a pydantic URL object
            address_policy=AddressPolicy.from_hosts(self._settings.allowed_hosts),
        )


def watch_recirculation(
    ctx: ControllerContext,
    settings: PlacementSettings,
    configs: Cache[FrozenMapping],
    queue: WorkQueue[str],
) -> Informer:
    """The recirculation ConfigMaps, one name in every namespace, watched (RBAC grants list and
    watch on that name only) so a reconcile reads the cache instead of asking the API server;
    a change wakes the configs of its namespace."""
    maps = ctx.informer(
        CONFIGMAPS, field_selector=f"metadata.name={settings.recirculation_config_map}"
    )
    nudge = configs_in_namespace(configs, queue)
    maps.add_handlers(
        EventHandlers(on_add=nudge, on_update=lambda _old, new: nudge(new), on_delete=nudge)
    )
    return maps


def placement_metrics(ctx: ControllerContext) -> PlacementMetrics:
    """One set of placement metrics per manager, shared by the reconciler and the webhook."""
    return ctx.shared(PlacementMetrics, lambda: PlacementMetrics(ctx.metrics.registry))


def placement_controller(ctx: ControllerContext) -> Controller:
    """The placement controller, and its webhook server (serving once a valid pair exists)."""
    settings = ctx.controller_settings.placement
    queue = ctx.new_queue(
        "placement", max_in_flight_per_namespace=namespace_share(settings.workers)
    )
    configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
    configs.add_handlers(config_handlers(queue))
    session = SharedSession(connect_to=ctx.controller_settings.outbound.rules())
    ctx.add_cleanup(session.close)
    prometheus = PrometheusPool(session.get)
    ctx.add_cleanup(prometheus.close)
    snapshot = PlacementSnapshot()
    metrics = placement_metrics(ctx)
    reconciler = PlacementReconciler(
        ctx.client,
        configs=configs,
        workloads=workload_caches(ctx),
        nodes=ctx.informer(NODES, fields=NODE_FIELDS),
        recirculation_maps=watch_recirculation(ctx, settings, configs, queue),
        signal_source=PrometheusRackSources(session.get, settings, prometheus),
        cooling=CoolingControllers(session.get, settings),
        snapshot=snapshot,
        events=ctx.events,
        metrics=metrics,
        settings=settings,
        # VPA footprints count only while the controller that writes them runs.
        vpa_footprints=ctx.controller_settings.vpa.enabled,
    )
    cert_dir = Path(settings.webhook_cert_dir)
    webhook = PlacementWebhook(snapshot, max_age_s=settings.snapshot_max_age_s, metrics=metrics)

    def certificate(ok: bool) -> None:
        metrics.webhook_certificate_ok.set(1 if ok else 0)

    def serving(server: WebhookServer) -> None:
        log.info("placement_webhook_serving", port=server.port)

    async def serve() -> None:
        # A missing or bad pair is reported and retried, never fatal: capping goes on, and
        # placement acts through deletion costs alone until the pair is valid.
        await serve_webhook(
            webhook.handle,
            "0.0.0.0",  # noqa: S104 - the API server calls in from outside the pod
            settings.webhook_port,
            cert_dir / "tls.crt",
            cert_dir / "tls.key",
            poll_s=CERTIFICATE_POLL_S,
            on_certificate=certificate,
            on_serving=serving,
        )

    ctx.add_service("placement-webhook", serve)
    return Controller(
        "placement",
        reconciler,
        queue,
        workers=settings.workers,
        reconcile_timeout_s=settings.reconcile_timeout_s,
    )
