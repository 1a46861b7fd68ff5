"""Status writes retry a lost race on a fresh read (client-go's RetryOnConflict), and only so."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from climatik.api.status import apply_merge_patch
from climatik.api.status_models import PowerCappingConfigStatus
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.resources import Resource
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.status_writer import (
    Desire,
    StatusConflictError,
    with_fields,
    write_status,
)


class Server(KubeClient):
    """One config as the API server keeps it: a status patch carrying a stale resourceVersion
    is refused with 409; each accepted write moves the version on."""

    def __init__(self, status: dict[str, Any] | None = None) -> None:
        super().__init__(api_client=None)
        self.obj: dict[str, Any] = {
            "metadata": {"name": "cap", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"powerCapLimit": 1000},
            **({"status": status} if status is not None else {}),
        }
        self.patches: list[Mapping[str, Any]] = []
        self.reads = 0
        self.gone = False
        self.racing_writes = 0
        """How many of the next status writes another writer gets in first."""

    def bump(self) -> None:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Any:
        self.reads += 1
        if self.gone:
            raise ApiError(404, {"reason": "NotFound"})
        return apply_merge_patch({}, self.obj)

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        assert (resource, subresource) == (POWER_CAPPING_CONFIGS, "status")
        self.patches.append(patch)
        if self.racing_writes:
            self.racing_writes -= 1
            # Another reconciler's condition lands first.
            self.obj.setdefault("status", {})["measuredPowerWatts"] = 500.0
            self.bump()
        if patch["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise ApiError(409, {"reason": "Conflict"})
        self.obj = apply_merge_patch(self.obj, {"status": patch["status"]})
        self.bump()
        return self.obj


def cap_of(watts: float) -> Desire:
    def desire(current: PowerCappingConfigStatus | None) -> PowerCappingConfigStatus:
        return with_fields(current, effective_cap_watts=watts)

    return desire


async def test_a_lost_race_is_recomputed_on_a_fresh_read_keeping_the_other_write() -> None:
    server = Server()
    server.racing_writes = 1
    cached = apply_merge_patch({}, server.obj)  # what the informer held when the reconcile began
    assert await write_status(server, cached, cap_of(800.0))
    assert server.reads == 1
    first, second = server.patches
    assert first["metadata"] == {"resourceVersion": "1"}
    assert second["metadata"] == {"resourceVersion": "2"}
    assert server.obj["status"] == {"measuredPowerWatts": 500.0, "effectiveCapWatts": 800.0}


async def test_a_status_that_keeps_moving_ends_the_reconcile_for_backoff() -> None:
    server = Server()
    server.racing_writes = 10
    with pytest.raises(StatusConflictError, match="ns/cap kept changing under 3 attempts"):
        await write_status(server, apply_merge_patch({}, server.obj), cap_of(800.0), attempts=3)
    assert len(server.patches) == 3


async def test_a_config_deleted_during_the_race_is_not_written() -> None:
    server = Server()
    server.racing_writes = 1
    server.gone = True
    assert not await write_status(server, apply_merge_patch({}, server.obj), cap_of(800.0))
    assert len(server.patches) == 1


async def test_nothing_to_change_sends_nothing() -> None:
    server = Server(status={"effectiveCapWatts": 800.0})
    assert not await write_status(server, apply_merge_patch({}, server.obj), cap_of(800.0))
    assert server.patches == []
