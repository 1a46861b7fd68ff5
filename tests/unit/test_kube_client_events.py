"""REST paths, the write gate, and Event aggregation (the recorder over a recording client)."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.kube.client import ApiError, KubeClient, NotLeaderError
from climatik.kube.events import WARNING, EventRecorder
from climatik.kube.resources import CONFIGMAPS, DEPLOYMENTS, LEASES, NODES, custom
from tests.unit.fakeclock import FakeClock


def test_rest_paths_for_core_group_cluster_scoped_and_custom_resources() -> None:
    assert CONFIGMAPS.path("ns", "a") == "/api/v1/namespaces/ns/configmaps/a"
    assert CONFIGMAPS.path() == "/api/v1/configmaps"
    assert DEPLOYMENTS.path("ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert LEASES.api_version == "coordination.k8s.io/v1"
    assert NODES.path("ignored-namespace", "n1") == "/api/v1/nodes/n1"
    scaled = custom("keda.sh", "v1alpha1", "scaledobjects")
    assert scaled.path("ns", "so", "status") == (
        "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/so/status"
    )


async def test_writes_are_refused_without_network_when_the_gate_is_closed() -> None:
    client = KubeClient(api_client=None, write_gate=lambda: False)
    with pytest.raises(NotLeaderError):
        await client.merge_patch(CONFIGMAPS, "a", {"data": {}}, "ns")
    with pytest.raises(NotLeaderError):
        await client.create(CONFIGMAPS, {"metadata": {"name": "a"}}, "ns")


def test_api_error_classifies_status() -> None:
    assert ApiError(409, {"reason": "Conflict"}).is_conflict
    assert ApiError(404).is_not_found
    assert ApiError(410, {"reason": "Expired"}).is_gone
    assert ApiError(500, {"reason": "Expired"}).is_gone  # an ERROR event may carry only a reason
    assert not ApiError(500).is_gone


class RecordingClient:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []
        self.missing: set[str] = set()

    async def create(self, resource: Any, body: dict[str, Any], namespace: Any) -> dict[str, Any]:
        self.created.append(body)
        return body

    async def merge_patch(
        self, resource: Any, name: str, patch: dict[str, Any], namespace: Any
    ) -> dict[str, Any]:
        if name in self.missing:
            raise ApiError(404)
        self.patched.append((name, patch))
        return {}


_OBJ = {"kind": "PowerCappingConfig", "metadata": {"name": "cap", "namespace": "ns", "uid": "u1"}}


async def test_repeats_are_counted_and_written_at_most_once_per_interval() -> None:
    client, clock = RecordingClient(), FakeClock()
    recorder = EventRecorder(client, clock=clock, repeat_write_interval_s=300)  # type: ignore[arg-type]
    for _ in range(3):
        assert await recorder.record(_OBJ, WARNING, "MetricsStale", "no data for 5m")
        clock.advance(15)
    assert len(client.created) == 1
    assert client.created[0]["involvedObject"]["uid"] == "u1"
    assert client.patched == []  # counted, not yet written
    clock.advance(300)
    assert await recorder.record(_OBJ, WARNING, "MetricsStale", "no data for 5m")
    assert [patch["count"] for _, patch in client.patched] == [4]
    # A different message is a different event.
    await recorder.record(_OBJ, WARNING, "MetricsStale", "no data for 10m")
    assert len(client.created) == 2


async def test_a_message_that_changes_every_time_is_held_to_a_burst_and_a_refill() -> None:
    """client-go's spam filter: 5,000 configs failing with ever-new numbers in their message
    must not cost a new Event per reconcile."""
    client, clock = RecordingClient(), FakeClock()
    recorder = EventRecorder(client, clock=clock, burst=5, refill_s=300)  # type: ignore[arg-type]
    accepted = [await recorder.record(_OBJ, WARNING, "Stale", f"{n} s old") for n in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    other = {
        "kind": "PowerCappingConfig",
        "metadata": {"name": "other", "namespace": "ns", "uid": "u2"},
    }
    assert await recorder.record(other, WARNING, "Stale", "9 s old")  # its own bucket
    clock.advance(300)
    assert await recorder.record(_OBJ, WARNING, "Stale", "600 s old")
    assert not await recorder.record(_OBJ, WARNING, "Stale", "601 s old")
    assert len(client.created) == 7


async def test_memory_is_bounded_whatever_the_number_of_objects() -> None:
    client = RecordingClient()
    recorder = EventRecorder(client, max_remembered=100)  # type: ignore[arg-type]
    for n in range(1000):
        obj = {"kind": "K", "metadata": {"name": f"o{n}", "namespace": "ns", "uid": f"u{n}"}}
        await recorder.record(obj, WARNING, "R", "m")
    assert len(recorder._seen) == len(recorder._tokens) == 100


async def test_an_old_or_vanished_event_starts_a_new_one() -> None:
    client, clock = RecordingClient(), FakeClock()
    recorder = EventRecorder(client, clock=clock, aggregation_window_s=600)  # type: ignore[arg-type]
    await recorder.record(_OBJ, WARNING, "R", "m")
    clock.advance(601)
    await recorder.record(_OBJ, WARNING, "R", "m")
    assert len(client.created) == 2
    client.missing.add(client.created[-1]["metadata"]["name"])  # garbage-collected by the server
    clock.advance(300)  # found at its next write
    await recorder.record(_OBJ, WARNING, "R", "m")
    assert len(client.created) == 3


async def test_recording_never_raises_into_the_reconciler() -> None:
    recorder = EventRecorder(KubeClient(api_client=None, write_gate=lambda: False))
    assert not await recorder.record(_OBJ, WARNING, "R", "m")
