"""Writing a PowerCappingConfig's status when several reconcilers share it.

The power-cap, carbon and placement reconcilers each own some status fields. Each write is a
compare-and-swap merge patch (it carries the resourceVersion it was computed from); on a 409 the
object is read afresh and the writer's change recomputed on top of it, a few times with jitter,
as client-go's RetryOnConflict does. Without the re-read, a writer whose cache lags behind a
busier one would lose every race. It is the reconcilers' one retry strategy for status: no
reconciler requeues for a lost race, and a status still moving after every attempt fails the
reconcile (`StatusConflictError`), which the worker retries with backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import structlog

from climatik.api.status import status_from_wire, status_patch
from climatik.api.status_models import PowerCappingConfigStatus
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import JsonObject, ObjectMeta
from climatik.kube.store import object_key, split_key
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS

log = structlog.get_logger(__name__)

Desire = Callable[[PowerCappingConfigStatus | None], PowerCappingConfigStatus]


class StatusConflictError(Exception):
    """The status kept moving under every attempt; the reconcile is retried with backoff."""


def with_fields(
    current: PowerCappingConfigStatus | None, **fields: object
) -> PowerCappingConfigStatus:
    """`current` with some fields replaced. A new status is validated like input; an existing
    one is copied with the replacements (they are the reconcilers' own typed values), which
    costs a tenth of dumping and validating it again on every reconcile of every config."""
    if current is None:
        return PowerCappingConfigStatus.model_validate(fields)
    unknown = fields.keys() - PowerCappingConfigStatus.model_fields.keys()
    if unknown:
        raise ValueError(f"not status fields: {sorted(unknown)}")
    return current.model_copy(update=fields)


async def write_status(
    client: KubeClient,
    obj: JsonObject,
    desire: Desire,
    *,
    attempts: int = 4,
    settled: bool = False,
) -> bool:
    """Apply `desire` to the status; True when a patch was sent, False when nothing changed.

    `settled` leaves out changes nobody would act on (`climatik.api.status.settle`): callers
    that measure on every reconcile pass it, and now and then not, to refresh the figures."""
    namespace, name = split_key(object_key(obj))
    for attempt in range(attempts):
        current = status_from_wire(obj)
        patch = status_patch(
            current,
            desire(current),
            resource_version=ObjectMeta.of(obj).resource_version,
            settled=settled,
        )
        if patch is None:
            return False
        try:
            await client.merge_patch(
                POWER_CAPPING_CONFIGS, name, patch, namespace, subresource="status"
            )
        except ApiError as error:
            if error.is_not_found:
                return False  # deleted meanwhile: nothing to report on
            if not error.is_conflict:
                raise
        else:
            return True
        log.debug("status_conflict", config=name, attempt=attempt + 1)
        await asyncio.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # noqa: S311
        try:
            obj = await client.get(POWER_CAPPING_CONFIGS, name, namespace)
        except ApiError as read_error:
            if read_error.is_not_found:
                return False
            raise
    msg = f"status of {namespace}/{name} kept changing under {attempts} attempts"
    raise StatusConflictError(msg)
