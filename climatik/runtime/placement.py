"""Wiring of rack placement: the placement reconciler and the admission webhook it feeds.

The reconciler (leader only, like every writer) scores racks and keeps pod-deletion costs
current; the webhook server runs on every replica and answers from the reconciler's snapshot.
A replica that is not leading has an empty snapshot and admits pods unchanged, which the
webhook's `failurePolicy: Ignore` makes harmless: placement is a preference, never a gate.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from climatik.kube.client import NODES
from climatik.kube.store import index_by_namespace
from climatik.reconcilers.placement import (
    CoolingControllers,
    PlacementReconciler,
    PlacementSettings,
    PrometheusRackSources,
)
from climatik.reconcilers.placement_metrics import placement_metrics
from climatik.reconcilers.placement_webhook import PlacementSnapshot, PlacementWebhook
from climatik.reconcilers.resources import (
    POWER_CAPPING_CONFIGS,
)
from climatik.runtime.capping import SharedSession, config_handlers, workload_caches
from climatik.runtime.reconcile import Controller, ControllerContext
from climatik.runtime.webhook import start_webhook_server
from climatik.sources.prometheus_pool import PrometheusPool

log = structlog.get_logger(__name__)


CERTIFICATE_POLL_S = 10.0


async def _wait_for_certificate(cert_dir: Path) -> tuple[Path, Path]:
    """The serving pair, once it exists: cert-manager or the self-signed script may write the
    Secret after the controller started, and serving must begin then without a restart."""
    cert_file, key_file = cert_dir / "tls.crt", cert_dir / "tls.key"
    warned = False
    while not (cert_file.exists() and key_file.exists()):
        if not warned:
            log.warning(
                "placement_webhook_waiting",
                reason=f"no tls.crt/tls.key in {cert_dir} yet; placement acts through "
                "deletion costs only until they appear",
            )
            warned = True
        await asyncio.sleep(CERTIFICATE_POLL_S)
    return cert_file, key_file


def placement_controller(ctx: ControllerContext) -> Controller:
    """The placement controller, and its webhook server (started once certificates exist)."""
    settings = PlacementSettings()
    queue = ctx.new_queue("placement")
    configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
    configs.add_handlers(config_handlers(queue))
    session = SharedSession()
    ctx.add_cleanup(session.close)
    prometheus = PrometheusPool(session.get)
    ctx.add_cleanup(prometheus.close)
    snapshot = PlacementSnapshot()
    metrics = placement_metrics(ctx.metrics.registry)
    reconciler = PlacementReconciler(
        ctx.client,
        configs=configs,
        workloads=workload_caches(ctx),
        nodes=ctx.informer(NODES),
        signal_source=PrometheusRackSources(session.get, settings, prometheus),
        cooling=CoolingControllers(session.get, settings),
        snapshot=snapshot,
        events=ctx.events,
        metrics=metrics,
        settings=settings,
    )
    cert_dir = Path(settings.webhook_cert_dir)
    webhook = PlacementWebhook(snapshot, max_age_s=settings.snapshot_max_age_s, metrics=metrics)

    async def serve() -> None:
        cert_file, key_file = await _wait_for_certificate(cert_dir)
        server = await start_webhook_server(
            webhook.handle,
            "0.0.0.0",  # noqa: S104 - the API server calls in from outside the pod
            settings.webhook_port,
            cert_file,
            key_file,
        )
        log.info("placement_webhook_serving", port=server.port)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    ctx.add_service("placement-webhook", serve)
    return Controller(
        "placement",
        reconciler,
        queue,
        workers=settings.workers,
        reconcile_timeout_s=settings.reconcile_timeout_s,
    )
