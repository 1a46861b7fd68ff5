"""Deferrable work with a deadline on the live path: the annotation's format, what the tracker
infers from vLLM's readings, the plan's freshness, and the carbon reconciler planning a target's
ceiling on a forecast served by the real local server that answers like the UK API.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from climatik.api.status_models import DeferrablePlanStatus, TargetKindName, TargetStatus
from climatik.domain.carbon import CarbonReading
from climatik.domain.config import TargetKind
from climatik.policies.deferrable_tracking import DeferrableReading, DeferrableTracker
from climatik.reconcilers.carbon import CarbonReconciler
from climatik.reconcilers.carbon_deferrable import DeferrablePlanning, PowerRoom
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap_measure import planned_max_replicas
from climatik.reconcilers.resources import DEFERRABLE_ANNOTATION
from climatik.reconcilers.settings import CarbonSettings
from climatik.reconcilers.targets import deferrable_of, parse_deadline_s
from tests.integration.helpers.carbon_servers import Answer, ProviderServer, provider_server
from tests.unit.helpers.status_world import RecordedEvents
from tests.unit.test_carbon_reconciler import KEY, Clock, Cluster, config_object

NOW = datetime(2026, 11, 29, 12, 10, tzinfo=UTC)
SLOT = timedelta(minutes=30)


def annotated(value: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "batch",
            "namespace": "llm",
            "annotations": {DEFERRABLE_ANNOTATION: value},
        }
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400.0), ("6h30m", 23400.0), ("90m", 5400.0), ("1.5h", 5400.0), ("45s", 45.0)],
)
def test_a_go_style_duration_is_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_deadline_s(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "1d", "30ms", "-1h", "1h 30m", "soon"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    assert parse_deadline_s(text) is None


def test_the_annotation_gives_a_deadline_or_just_deferrable() -> None:
    kind = TargetKind.SCALED_OBJECT
    assert deferrable_of(annotated("24h"), kind) == (True, 86400.0, None)
    assert deferrable_of(annotated(" TRUE "), kind) == (True, None, None)
    assert deferrable_of(annotated("false"), kind) == (False, None, None)


@pytest.mark.parametrize("value", ["tomorrow", "30s", "24 h"])
def test_a_bad_deadline_is_not_deferrable_and_says_why(value: str) -> None:
    deferrable, deadline, problem = deferrable_of(annotated(value), TargetKind.SCALED_OBJECT)
    assert (deferrable, deadline) == (False, None)
    assert problem is not None
    assert repr(value) in problem
    assert '"24h"' in problem


def reading(minutes: float, finished: float, waiting: float, replicas: int) -> DeferrableReading:
    at = NOW + timedelta(minutes=minutes)
    slot = at.replace(minute=(at.minute // 30) * 30, second=0, microsecond=0)
    return DeferrableReading(at, slot, finished, waiting, replicas)


def test_the_tracker_infers_arrivals_throughput_and_done_work() -> None:
    tracker = DeferrableTracker(timedelta(hours=6))
    tracker.observe(reading(0, finished=2.0, waiting=100, replicas=2))
    tracker.observe(reading(1, finished=2.0, waiting=130, replicas=2))
    # 120 finished in the minute and 30 more waiting: 150 arrived, beside the 100 found.
    assert sum(tracker.observed.values()) == pytest.approx(150)
    assert sum(tracker.arrivals.values()) == pytest.approx(250)
    assert tracker.expected_arrivals_per_s(NOW + timedelta(minutes=1)) == pytest.approx(2.5)
    assert tracker.per_replica_rps == pytest.approx(1.0)
    assert tracker.done == pytest.approx(120)
    view = tracker.target("batch", min_replicas=0, max_replicas=4)
    assert view is not None
    assert sum(q.amount for q in view.queued) == pytest.approx(130)
    # A new carbon slot starts counting done work afresh.
    tracker.observe(reading(21, finished=0.0, waiting=130, replicas=0))
    assert tracker.done == 0.0


@pytest.mark.parametrize("bucket", [None, SLOT], ids=["live five minutes", "twin slot"])
def test_noise_on_a_long_queue_adds_no_arrivals(bucket: timedelta | None) -> None:
    """Scaled to zero, a queue grows by 15 requests a second to 160,000 in three hours, read
    every 30 s to within 1 %. Each reading's difference from the last is mostly noise (about
    2,000 requests either way against 450 arrived): cut at zero each time, it counted three
    times the arrivals and made the backlog look hours younger than it was."""
    tracker = DeferrableTracker(timedelta(hours=6), bucket=bucket)
    rng = random.Random(7)
    for step in range(360):
        waiting = 1000.0 + 15.0 * 30.0 * step
        noisy = waiting * (1.0 + rng.gauss(0.0, 0.01))
        tracker.observe(reading(step / 2, finished=0.0, waiting=noisy, replicas=0))
    arrived = 15.0 * 30.0 * 359
    assert sum(tracker.observed.values()) == pytest.approx(arrived, rel=0.05)
    assert tracker.expected_arrivals_per_s(NOW + timedelta(minutes=180)) == pytest.approx(
        15.0, rel=0.05
    )
    view = tracker.target("batch", min_replicas=0, max_replicas=4, nominal_per_replica_rps=25.0)
    assert view is not None
    # The oldest work waiting is the first slot's: due six hours after it, not later; and
    # what waits from before 13:00 is what arrived then (the 1,000 found, 15 a second since).
    assert min(q.deadline for q in view.queued) == NOW.replace(minute=0) + timedelta(hours=6)
    before_one = sum(
        q.amount for q in view.queued if q.deadline < NOW.replace(minute=0) + timedelta(hours=7)
    )
    assert before_one == pytest.approx(1000.0 + 15.0 * 50 * 60, rel=0.1)


def test_the_tracker_learns_what_the_power_admits_at_each_hour() -> None:
    tracker = DeferrableTracker(timedelta(hours=6))
    tracker.observe(reading(0, finished=2.0, waiting=100, replicas=2))
    tracker.learn_admitted(NOW, 4)  # 12:10
    tracker.learn_admitted(NOW + timedelta(hours=1), 1)
    for i in range(100):  # 12:10 to 13:00 the next day, every 30 s
        tracker.learn_admitted(NOW + timedelta(days=1, seconds=30 * i), 2)
    view = tracker.target("batch", min_replicas=0, max_replicas=4)
    assert view is not None
    assert view.admitted_now == 2
    assert view.admitted_by_hour[13] == pytest.approx(1.0)
    assert view.admitted_by_hour[12] is not None
    assert 2.0 < view.admitted_by_hour[12] < 2.5  # the last day's, mostly
    assert view.admitted_by_hour[14] is None
    # Without a measurement the current slot counts the maximum and no hour learns anything.
    tracker.learn_admitted(NOW + timedelta(hours=2), None)
    assert tracker.admitted_now is None
    assert tracker.admitted_by_hour[14] is None


def test_work_still_waiting_past_its_deadline_is_a_miss_counted_once() -> None:
    tracker = DeferrableTracker(timedelta(minutes=10))
    tracker.observe(reading(0, finished=0.0, waiting=0, replicas=1))
    tracker.observe(reading(1, finished=0.0, waiting=50, replicas=1))  # 50 arrive
    assert tracker.observe(reading(5, finished=0.0, waiting=50, replicas=1)) == 0.0
    late = tracker.observe(reading(12, finished=0.0, waiting=50, replicas=1))
    assert late == pytest.approx(50)
    assert tracker.observe(reading(13, finished=0.1, waiting=44, replicas=1)) == 0.0
    assert tracker.misses == pytest.approx(50)


def test_nothing_is_planned_before_a_replica_was_seen_serving() -> None:
    tracker = DeferrableTracker(timedelta(hours=6))
    tracker.observe(reading(0, finished=0.0, waiting=500, replicas=0))
    assert tracker.target("batch", min_replicas=0, max_replicas=4) is None


def test_a_stale_plan_sets_no_ceiling() -> None:
    plan = DeferrablePlanStatus(
        kind=TargetKindName.SCALED_OBJECT,
        name="batch",
        planned_max_replicas=0,
        valid_until=NOW,
        backlog_requests=0,
        planned_requests=0,
        done_requests=0,
        deadline_misses=0,
        behind=False,
    )
    before = NOW - timedelta(seconds=1)
    assert planned_max_replicas([plan], "ScaledObject", "batch", before) == 0
    assert planned_max_replicas([plan], "ScaledObject", "batch", NOW) is None
    assert planned_max_replicas([plan], "ScaledObject", "chat", before) is None
    assert planned_max_replicas(None, "ScaledObject", "batch", before) is None


def uk_slots(intensities: list[float]) -> dict[str, Any]:
    """Half-hour slots from the one covering NOW, in the UK API's documented shape."""
    start = NOW.replace(minute=0)
    return {
        "data": [
            {
                "from": (start + i * SLOT).strftime("%Y-%m-%dT%H:%MZ"),
                "to": (start + (i + 1) * SLOT).strftime("%Y-%m-%dT%H:%MZ"),
                "intensity": {"forecast": value, "actual": None, "index": "moderate"},
            }
            for i, value in enumerate(intensities)
        ]
    }


FORECAST_PATH = f"/intensity/{NOW:%Y-%m-%dT%H:%MZ}/fw24h"


@pytest.fixture
async def uk_api() -> AsyncIterator[ProviderServer]:
    async with provider_server({}) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def planned_config() -> Cluster:
    carbon = {
        "provider": "UKNationalGrid",
        "target": {
            "type": "IntensityBand",
            "cleanIntensityGramsPerKWh": 100,
            "dirtyIntensityGramsPerKWh": 400,
        },
        "floorWatts": 400,
    }
    config = config_object(carbon)
    # What the power-cap reconciler measured of the target with a 6-hour deadline.
    config["status"] = {
        "targets": [
            {
                "name": "batch",
                "kind": "ScaledObject",
                "currentReplicas": 2,
                "userMaxReplicas": 4,
                "minReplicas": 0,
                "deadlineSeconds": 21600,
                "waitingRequests": 1000,
                "finishedRequestsPerSecond": 2.0,
            }
        ]
    }
    return Cluster(config)


async def plan_once(
    uk_api: ProviderServer, session: aiohttp.ClientSession, intensities: list[float]
) -> tuple[Cluster, CollectorRegistry]:
    uk_api.set_default("/intensity", Answer(uk_slots(intensities[:1])))
    uk_api.set_default(FORECAST_PATH, Answer(uk_slots(intensities)))
    cluster = planned_config()
    registry = CollectorRegistry()

    async def session_factory() -> aiohttp.ClientSession:
        return session

    rec = CarbonReconciler(
        cluster,  # type: ignore[arg-type]
        configs=cluster,
        events=RecordedEvents(),
        metrics=CappingMetrics(registry),
        settings=CarbonSettings(uk_national_grid_url=uk_api.url, plan_interval_s=30),
        session_factory=session_factory,
        clock=Clock(),
        wall_clock=lambda: NOW,
    )
    result = await rec.reconcile(KEY)
    assert result.requeue_after == 30, "planned work is planned again every plan interval"
    return cluster, registry


async def test_a_clean_slot_ahead_holds_the_work_until_then(
    uk_api: ProviderServer, session: aiohttp.ClientSession
) -> None:
    cluster, registry = await plan_once(uk_api, session, [400, 400, 400, 400, 50, 400])
    status = cluster.config()["status"]
    (plan,) = status["deferrablePlans"]
    assert plan["name"] == "batch"
    assert plan["plannedMaxReplicas"] == 0, "nothing runs in the dirty slot"
    assert plan["backlogRequests"] == 1000
    assert not plan["behind"]
    assert status["effectiveCapWatts"] == 950, "planned work leaves 5 % of the cap to the rest"
    message = cluster.carbon_condition()["message"]
    assert "batch: 0 of 0 requests planned this slot done, 1000 waiting" in message
    labels = {"config": KEY, "target": "batch"}
    assert registry.get_sample_value("climatik_carbon_deferrable_backlog_requests", labels) == 1000
    assert registry.get_sample_value("climatik_carbon_deferrable_planned_requests", labels) == 0
    misses = "climatik_carbon_deferrable_deadline_misses_total"
    assert registry.get_sample_value(misses, labels) == 0


async def test_a_clean_slot_now_raises_the_ceiling(
    uk_api: ProviderServer, session: aiohttp.ClientSession
) -> None:
    cluster, registry = await plan_once(uk_api, session, [50, 400, 400, 400, 400, 400])
    (plan,) = cluster.config()["status"]["deferrablePlans"]
    assert plan["plannedMaxReplicas"] >= 2, "the backlog is served now, while the grid is clean"
    assert plan["plannedRequests"] == 1000
    labels = {"config": KEY, "target": "batch"}
    assert registry.get_sample_value("climatik_carbon_deferrable_planned_requests", labels) == 1000


def batch_status(current: int) -> TargetStatus:
    return TargetStatus(
        name="batch",
        kind=TargetKindName("ScaledObject"),
        current_replicas=current,
        user_max_replicas=4,
        min_replicas=0,
        watts_per_replica=1_000.0,
        deadline_seconds=21_600,
        waiting_requests=100_000,
        finished_requests_per_second=2.0,
    )


def clean_now() -> list[CarbonReading]:
    start = NOW.replace(minute=0)
    return [
        CarbonReading(c, start + i * SLOT, start + (i + 1) * SLOT, is_forecast=True)
        for i, c in enumerate([50, 400, 400, 400])
    ]


def test_the_live_planner_holds_the_plan_to_the_power_and_learns_the_hour() -> None:
    """A clean slot now asks for the maximum (4); the measured power has room for one more
    replica than the 2 running (9 kW of a 10 kW budget, 1 kW each), so the ceiling is 3 and
    this hour of the day learns 3 (what later plans count this slot at, tomorrow)."""
    planning = DeferrablePlanning()
    for minute in (0, 1):
        (planned,) = planning.plan(
            [batch_status(2)],
            clean_now(),
            now=NOW + timedelta(minutes=minute),
            slot_start=NOW.replace(minute=0),
            valid_until=NOW + timedelta(minutes=30),
            power=PowerRoom(measured_w=9_000.0, budget_w=10_000.0),
        )
    assert planned.status.planned_max_replicas == 3
    (tracker,) = planning.trackers.values()
    assert tracker.admitted_now == 3
    assert tracker.admitted_by_hour[NOW.hour] == pytest.approx(3.0)
    # Without a power measurement the plan is the plan, and no hour learns anything new.
    (planned,) = planning.plan(
        [batch_status(2)],
        clean_now(),
        now=NOW + timedelta(minutes=2),
        slot_start=NOW.replace(minute=0),
        valid_until=NOW + timedelta(minutes=30),
        power=PowerRoom(measured_w=None, budget_w=10_000.0),
    )
    assert planned.status.planned_max_replicas == 4
    assert tracker.admitted_now is None
