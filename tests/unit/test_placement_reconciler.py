"""The placement reconciler over in-memory caches: what it publishes, patches and reports.

The Kubernetes side is a recording client (the dev-cluster tests in
tests/integration/test_placement.py run the same reconciler against the real API server).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from climatik.api.status import apply_merge_patch
from climatik.domain.config import PowerCappingConfig
from climatik.domain.placement import PlaceScore, SupplySetpoint
from climatik.kube import cache as kube_cache
from climatik.kube.client import ApiError
from climatik.kube.resources import Resource
from climatik.kube.store import FrozenMapping, Store, thaw
from climatik.policies.heat_fit import PlacePosition
from climatik.policies.observations import recirculation_from_history
from climatik.policies.placement import score_racks as policy_score_racks
from climatik.reconcilers import placement as placement_reconciler
from climatik.reconcilers.placement import PlacementReconciler
from climatik.reconcilers.placement_deletion_costs import DELETION_COST_ANNOTATION
from climatik.reconcilers.placement_metrics import PlacementMetrics
from climatik.reconcilers.placement_webhook import PlacementSnapshot
from climatik.reconcilers.result import Result
from climatik.reconcilers.settings import PlacementSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.sources.cooling import CoolingController, CoolingError, CoolingOutcome
from climatik.sources.racks import RackSignals, RackSignalSource, StaticRackSignalSource
from tests.unit.helpers.placement_objects import DEPLOYMENT, KEY, NS, config, node, pod
from tests.unit.helpers.status_world import StoreCache
from tests.unit.helpers.yaml_bombs import ALIAS_BOMB


class RecordingClient:
    """Records patches; answers GETs from a dict (404 otherwise), or with an error set for it."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.objects = objects or {}
        self.errors: dict[tuple[str, str], ApiError] = {}
        self.patches: list[tuple[str, str, dict[str, Any], str | None]] = []
        self.patch_errors: dict[str, ApiError] = {}
        """Errors for merge patches of a resource (by plural); refused patches are not in
        `patches` but in `refused`."""
        self.refused: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self.request_error: ApiError | None = None

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Any:
        error = self.errors.get((resource.plural, name))
        if error is not None:
            raise error
        found = self.objects.get((resource.plural, name))
        if found is None:
            raise ApiError(404, {"reason": "NotFound"})
        return found

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Any:
        error = self.patch_errors.get(resource.plural)
        if error is not None and subresource is None:
            self.refused.append((resource.plural, name))
            raise error
        self.patches.append((resource.plural, name, patch, subresource))
        return {}

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        """Evictions: recorded, or refused with the error set for them."""
        self.requests.append((method, path))
        if self.request_error is not None:
            raise self.request_error
        return {}


class ConfigMapsOf:
    """The recirculation ConfigMap informer as the reconciler reads it (its store), holding
    what the test put in the client's objects: a test changes the cache by changing those."""

    def __init__(self, client: RecordingClient) -> None:
        self.client = client
        self.store = self

    def get(self, key: str) -> Any:
        return self.client.objects.get(("configmaps", key.partition("/")[2]))

    # The rest of a cache store, unused by what reads recirculation ConfigMaps.
    version = 0

    def objects(self) -> list[Any]:
        return []

    def __len__(self) -> int:
        return 0

    def by_index(self, index_name: str, value: str) -> list[Any]:
        return []

    def index_version(self, index_name: str, value: str) -> int:
        return 0

    def add_indexer(self, name: str, func: Any) -> None:
        return None


def _store(cache: kube_cache.Cache[FrozenMapping]) -> Store:
    """The test's own store behind a reconciler's read-only cache, to change it."""
    assert isinstance(cache.store, Store)
    return cache.store


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str, str]] = []

    async def record(self, obj: Any, event_type: str, reason: str, message: str) -> bool:
        self.recorded.append((obj["metadata"]["name"], event_type, reason, message))
        return True


class Cooling:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[Sequence[SupplySetpoint]] = []

    async def apply(self, config_key: str, setpoints: Sequence[SupplySetpoint]) -> CoolingOutcome:
        if self.fail:
            raise CoolingError("cooling webhook http://bms answered HTTP 503: busy")
        self.sent.append(setpoints)
        return CoolingOutcome(True, "sent")


def reconciler(
    cfg: dict[str, Any],
    pods: Sequence[dict[str, Any]],
    signals: RackSignalSource,
    *,
    client: RecordingClient | None = None,
    cooling: CoolingController | None = None,
    deployment: dict[str, Any] | None = None,
    clock: Callable[[], float] = lambda: 1000.0,
    nodes: StoreCache | None = None,
    scaled_objects: StoreCache | None = None,
    vpa_footprints: bool = True,
) -> tuple[PlacementReconciler, RecordingClient, Events, PlacementMetrics]:
    client = client or RecordingClient()
    events = Events()
    metrics = PlacementMetrics()

    async def source_for(_c: PowerCappingConfig) -> RackSignalSource:
        return signals

    async def cooling_for(_c: PowerCappingConfig) -> CoolingController:
        return cooling or Cooling()

    rec = PlacementReconciler(
        client,  # type: ignore[arg-type]
        configs=StoreCache(cfg),
        workloads=WorkloadCaches(
            scaled_objects=scaled_objects or StoreCache(),
            inference_services=StoreCache(),
            deployments=StoreCache(deployment or DEPLOYMENT),
            pods=StoreCache(*pods),
        ),
        nodes=nodes or StoreCache(node("a-0", "rack-a"), node("b-0", "rack-b"), node("x", "")),
        recirculation_maps=ConfigMapsOf(client),
        signal_source=source_for,
        cooling=cooling_for,
        snapshot=PlacementSnapshot(),
        events=events,
        metrics=metrics,
        settings=PlacementSettings(interval_s=7.0),
        clock=clock,
        vpa_footprints=vpa_footprints,
    )
    return rec, client, events, metrics


def static(*signals: RackSignals) -> StaticRackSignalSource:
    source = StaticRackSignalSource()
    source.set(*signals)
    return source


HOT_OVER = RackSignals("rack-a", watts=20_000.0, inlet_c=31.0)
COOL = RackSignals("rack-b", watts=10_000.0, inlet_c=22.0)


async def test_webhook_mode_publishes_preferences_and_exclusions() -> None:
    rec, client, events, metrics = reconciler(config(), [], static(HOT_OVER, COOL))
    result = await rec.reconcile(f"{NS}/cap")
    assert result.requeue_after == 7.0
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    assert found.preferred == (("rack-b", 100),)
    assert found.excluded == ("rack-a",)
    assert found.rack_label_key == KEY
    # Status: the RacksWithinLimits condition only, written as a compare-and-swap.
    (status_patch,) = [p for p in client.patches if p[3] == "status"]
    body = status_patch[2]
    assert body["metadata"] == {"resourceVersion": "7"}
    (condition,) = body["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "RacksWithinLimits",
        "False",
        "RackOverLimit",
    )
    assert "rack-b score" in condition["message"]
    assert "racks" not in body["status"]  # status.racks belongs to the power-cap reconciler
    reasons = [e[2] for e in events.recorded]
    assert "RackOverLimit" in reasons
    assert "CoolingRecommendation" in reasons
    r = metrics.registry
    assert (
        r.get_sample_value("climatik_rack_inlet_celsius", {"config": "llm/cap", "rack": "rack-a"})
        == 31.0
    )
    assert (
        r.get_sample_value("climatik_rack_admissible", {"config": "llm/cap", "rack": "rack-a"})
        == 0.0
    )
    # One score series per config and rack, however many workloads the config places.
    score_labels = sorted(
        sorted(sample.labels.items())
        for family in r.collect()
        if family.name == "climatik_rack_score"
        for sample in family.samples
    )
    assert score_labels == [
        [("config", "llm/cap"), ("rack", "rack-a")],
        [("config", "llm/cap"), ("rack", "rack-b")],
    ]
    # A second round with the same readings repeats no Event.
    events.recorded.clear()
    await rec.reconcile(f"{NS}/cap")
    assert events.recorded == []


def _seated_config(rack_a_seats: int) -> dict[str, Any]:
    """A config capping ScaledObject `web` (of Deployment `chat`), whose VPA footprint seats
    `rack_a_seats` replicas on rack-a and 5 on rack-b (as the VPA-hold controller writes)."""
    cfg = config(scaleObjectRef=[{"metadata": {"name": "web"}}])
    del cfg["spec"]["deploymentName"]
    cfg["status"] = {
        "replicaFootprints": [
            {
                "name": "web",
                "verticalPodAutoscaler": "web",
                "source": "VpaTarget",
                "seats": [
                    {"rackId": "rack-a", "replicas": rack_a_seats},
                    {"rackId": "rack-b", "replicas": 5},
                ],
            },
            # Another config's or a former target's footprint: not this workload's seats.
            {
                "name": "other",
                "verticalPodAutoscaler": "other",
                "source": "VpaTarget",
                "seats": [{"rackId": "rack-b", "replicas": 0}],
            },
        ]
    }
    return cfg


WEB = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "web", "namespace": NS},
    "spec": {"scaleTargetRef": {"name": "chat"}, "maxReplicaCount": 8},
}


@pytest.mark.parametrize("rack_a_seats", [0, 1])
async def test_a_rack_without_a_seat_for_the_footprint_is_not_preferred(
    rack_a_seats: int,
) -> None:
    """rack-a is the better rack (cooler, less power), but no node there seats one replica of
    VPA's footprint: it ranks last and gets no preferred weight; with a seat it is preferred."""
    cool_a = RackSignals("rack-a", watts=5_000.0, inlet_c=20.0)
    rec, *_ = reconciler(
        _seated_config(rack_a_seats),
        [],
        static(cool_a, COOL),
        scaled_objects=StoreCache(WEB),
    )
    await rec.reconcile(f"{NS}/cap")
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    if rack_a_seats:
        assert [rack for rack, _ in found.preferred] == ["rack-a", "rack-b"]
        assert found.seatless == ()
    else:
        assert found.preferred == (("rack-b", 100),)
        assert found.seatless == ("rack-a",)
    assert found.excluded == ()  # never required away: the scheduler filters nodes itself


async def test_footprints_left_by_a_vpa_hold_controller_now_off_are_not_seats() -> None:
    """Nothing refreshes `status.replicaFootprints` while the VPA-hold controller is off: the
    seats they report are stale, and placement ranks on power and heat alone."""
    cool_a = RackSignals("rack-a", watts=5_000.0, inlet_c=20.0)
    rec, *_ = reconciler(
        _seated_config(0),
        [],
        static(cool_a, COOL),
        scaled_objects=StoreCache(WEB),
        vpa_footprints=False,
    )
    await rec.reconcile(f"{NS}/cap")
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    assert [rack for rack, _ in found.preferred] == ["rack-a", "rack-b"]
    assert found.seatless == ()


async def test_every_rack_over_its_limit_excludes_none() -> None:
    both_hot = static(HOT_OVER, RackSignals("rack-b", watts=20_000.0, inlet_c=33.0))
    rec, *_ = reconciler(config(), [], both_hot)
    await rec.reconcile(f"{NS}/cap")
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    assert found.excluded == ()
    assert found.preferred == ()


async def test_deletion_costs_are_patched_only_when_they_change() -> None:
    pods = [pod("p-a", "a-0"), pod("p-b", "b-0", cost="1"), pod("p-x", "", cost=None)]
    hot_ok = RackSignals("rack-a", watts=20_000.0, inlet_c=28.0)
    rec, client, *_ = reconciler(config(), pods, static(hot_ok, COOL))
    await rec.reconcile(f"{NS}/cap")
    pod_patches = {p[1]: p[2] for p in client.patches if p[0] == "pods"}
    assert pod_patches == {
        "p-a": {"metadata": {"annotations": {DELETION_COST_ANNOTATION: "1"}}},
        "p-b": {"metadata": {"annotations": {DELETION_COST_ANNOTATION: "2"}}},
    }
    # Already current (p-a 1, p-b 2, unscheduled p-x 0 = absent): nothing to write.
    current = [pod("p-a", "a-0", "1"), pod("p-b", "b-0", "2"), pod("p-x", "")]
    rec2, client2, *_ = reconciler(config(), current, static(hot_ok, COOL))
    await rec2.reconcile(f"{NS}/cap")
    assert [p for p in client2.patches if p[0] == "pods"] == []


async def test_recirculation_from_config_map_orders_otherwise_equal_racks() -> None:
    cm = {
        "data": {
            "racks.yaml": (
                "rack-a: {recirculationCPerKw: 0.1}\nrack-b: {recirculationCPerKw: 2.5, zone: z9}\n"
            )
        }
    }
    same = [RackSignals("rack-a", watts=10_000.0, inlet_c=22.0), COOL]
    rec, *_ = reconciler(
        config(),
        [],
        static(*same),
        client=RecordingClient({("configmaps", "climatik-recirculation"): cm}),
    )
    await rec.reconcile(f"{NS}/cap")
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    assert found.preferred[0] == ("rack-a", 100)


async def test_heat_matrix_columns_from_the_config_map_steer_placement_and_scale_in() -> None:
    # Same factors, but rack-a's heat lands on rack-b's (hottest) inlet and rack-b's mostly on
    # the cooler rack-a: a replica on rack-b raises the room's hottest inlet less, although
    # rack-b is the warmer rack. Each of the two pods draws 5 kW.
    cm = {
        "data": {
            "racks.yaml": (
                "rack-a: {recirculationCPerKw: 0.5, inletRiseCPerKw: {rack-a: 0.1, rack-b: 0.4}}\n"
                "rack-b: {recirculationCPerKw: 0.5, inletRiseCPerKw: {rack-a: 0.4, rack-b: 0.1}}\n"
            )
        }
    }
    signals = static(
        RackSignals("rack-a", watts=10_000.0, inlet_c=24.0),
        RackSignals("rack-b", watts=10_000.0, inlet_c=26.0),
    )
    signals.set_service_series(NS, (9_000.0, 10_000.0, 10_000.0))
    rec, client, *_ = reconciler(
        config(),
        [pod("p-a", "a-0"), pod("p-b", "b-0")],
        signals,
        client=RecordingClient({("configmaps", "climatik-recirculation"): cm}),
    )
    await rec.reconcile(f"{NS}/cap")
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    assert found.preferred[0] == ("rack-b", 100)
    # Removing p-a's 5 kW cools rack-b's inlet by 2 °C, p-b's only by 0.5 °C: p-a goes first.
    costs = {
        p[1]: int(p[2]["metadata"]["annotations"][DELETION_COST_ANNOTATION])
        for p in client.patches
        if p[0] == "pods"
    }
    assert costs["p-a"] < costs["p-b"]


async def test_cooling_webhook_sends_and_reports_failures() -> None:
    cooling = Cooling()
    rec, _, events, metrics = reconciler(
        config(cooling="Webhook"),
        [],
        static(RackSignals("rack-a", inlet_c=20.0, supply_c=15.0), COOL),
        cooling=cooling,
    )
    await rec.reconcile(f"{NS}/cap")
    (sent,) = cooling.sent
    by_group = {s.group: s for s in sent}
    assert by_group["rack-a"].supply_c == 17.0  # +2 °C step toward 32 - 0.5 °C
    assert [e[2] for e in events.recorded if e[2].startswith("Cooling")] == ["CoolingSetpointsSent"]
    failing = Cooling(fail=True)
    rec2, _, events2, metrics2 = reconciler(
        config(cooling="Webhook"), [], static(COOL), cooling=failing
    )
    await rec2.reconcile(f"{NS}/cap")
    assert ("cap", "Warning", "CoolingWebhookFailed") in [e[:3] for e in events2.recorded]
    assert (
        metrics2.registry.get_sample_value(
            "climatik_cooling_posts_total", {"config": "llm/cap", "result": "error"}
        )
        == 1.0
    )
    del metrics


async def test_template_mode_patches_the_deployment_and_not_the_snapshot() -> None:
    rec, client, events, _ = reconciler(config(mode="Template"), [], static(HOT_OVER, COOL))
    await rec.reconcile(f"{NS}/cap")
    assert rec.snapshot.lookup(NS, "chat") is None
    (dep_patch,) = [p for p in client.patches if p[0] == "deployments"]
    affinity = dep_patch[2]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": KEY, "operator": "In", "values": ["rack-b"]}]}
    ]
    assert ("chat", "Normal", "TemplateAffinityUpdated") in [e[:3] for e in events.recorded]


async def test_deleted_or_disabled_config_is_forgotten() -> None:
    rec, _, _, metrics = reconciler(config(), [], static(HOT_OVER, COOL))
    await rec.reconcile(f"{NS}/cap")
    assert rec.snapshot.lookup(NS, "chat") is not None
    _store(rec._configs).delete(f"{NS}/cap")
    assert await rec.reconcile(f"{NS}/cap") == Result()
    assert rec.snapshot.lookup(NS, "chat") is None
    assert (
        metrics.registry.get_sample_value(
            "climatik_rack_inlet_celsius", {"config": "llm/cap", "rack": "rack-a"}
        )
        is None
    )
    disabled = config(mode="Disabled", cooling="Disabled")
    rec2, client2, *_ = reconciler(disabled, [pod("p-a", "a-0")], static(HOT_OVER, COOL))
    await rec2.reconcile(f"{NS}/cap")
    assert client2.patches == []


async def test_recirculation_is_estimated_from_history_without_a_config_map() -> None:
    source = StaticRackSignalSource()
    now = [1000.0]
    rec, *_ = reconciler(config(), [], source, clock=lambda: now[0])
    # rack-b's heat reaches both inlets (factor 0.9 °C/kW), rack-a's little (0.3 °C/kW).
    for i in range(12):
        pa, pb = 10_000.0 + 1_000.0 * (i % 3), 10_000.0 + 1_500.0 * (i % 4)
        ta = 18.0 + 0.2 * pa / 1000.0 + 0.6 * pb / 1000.0
        tb = 18.0 + 0.1 * pa / 1000.0 + 0.3 * pb / 1000.0
        source.set(
            RackSignals("rack-a", watts=pa, inlet_c=ta), RackSignals("rack-b", watts=pb, inlet_c=tb)
        )
        await rec.reconcile(f"{NS}/cap")
        now[0] += 7.0  # one interval: one sample
    # Now both racks read the same: only the learned recirculation can tell them apart.
    source.set(
        RackSignals("rack-a", watts=12_000.0, inlet_c=25.0),
        RackSignals("rack-b", watts=12_000.0, inlet_c=25.0),
    )
    await rec.reconcile(f"{NS}/cap")
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    assert found.preferred == (("rack-a", 100), ("rack-b", 1))


async def test_a_standby_publishes_scores_but_writes_nothing() -> None:
    pods = [pod("p-a", "a-0"), pod("p-b", "b-0")]
    client = RecordingClient()
    client.write_gate = lambda: False  # type: ignore[attr-defined]
    rec, _, events, _ = reconciler(config(), pods, static(HOT_OVER, COOL), client=client)
    assert await rec.reconcile(f"{NS}/cap") == Result(requeue_after=7.0)
    assert rec.snapshot.lookup(NS, "chat") is not None
    assert client.patches == []
    assert events.recorded == []


def scores_by_rack(metrics: PlacementMetrics) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name == "climatik_rack_score":
            for sample in family.samples:
                found[sample.labels["rack"]] = sample.value
    return found


class PerPodSource(StaticRackSignalSource):
    """Answers a service's series as the sum of the named pods' watts, and records the names."""

    def __init__(self, watts_by_pod: dict[str, float], *signals: RackSignals) -> None:
        super().__init__()
        self.set(*signals)
        self.watts_by_pod = watts_by_pod
        self.asked: list[tuple[str, ...]] = []

    async def service_power_series(self, namespace: str, pods: Sequence[str]) -> tuple[float, ...]:
        self.asked.append(tuple(sorted(pods)))
        return (sum(self.watts_by_pod.get(p, 0.0) for p in pods),)


async def test_one_replicas_watts_are_the_series_over_the_pods_that_draw_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every running pod draws 5 kW, a terminating one too while it drains; a Pending one draws
    # nothing. One replica is 5 kW whichever pods exist, as long as the series and the divisor
    # count the same pods: the terminating pod is in both, the Pending one in neither.
    cm = {
        "data": {
            "racks.yaml": (
                "rack-a: {recirculationCPerKw: 0.5, inletRiseCPerKw: {rack-a: 0.1, rack-b: 0.4}}\n"
                "rack-b: {recirculationCPerKw: 0.5, inletRiseCPerKw: {rack-a: 0.4, rack-b: 0.1}}\n"
            )
        }
    }
    draw = {"p-a": 5_000.0, "p-b": 5_000.0, "p-old": 5_000.0}
    # The workload's own scores (the webhook's input; the metric has only the racks' own).
    workload_scores: list[dict[str, float]] = []

    def recording(*args: Any, **kwargs: Any) -> tuple[PlaceScore, ...]:
        scores = policy_score_racks(*args, **kwargs)
        if kwargs.get("service_series_w") is not None:
            workload_scores.append({s.place_id: s.score for s in scores})
        return scores

    monkeypatch.setattr(placement_reconciler, "score_racks", recording)

    async def scores(pods: list[dict[str, Any]]) -> tuple[dict[str, float], PerPodSource]:
        signals = PerPodSource(
            draw,
            RackSignals("rack-a", watts=10_000.0, inlet_c=24.0),
            RackSignals("rack-b", watts=10_000.0, inlet_c=26.0),
        )
        rec, _, _, _ = reconciler(
            config(),
            pods,
            signals,
            client=RecordingClient({("configmaps", "climatik-recirculation"): cm}),
        )
        await rec.reconcile(f"{NS}/cap")
        return workload_scores[-1], signals

    running = [pod("p-a", "a-0"), pod("p-b", "b-0")]
    terminating = pod("p-old", "a-0")
    terminating["metadata"]["deletionTimestamp"] = "2026-11-29T20:00:00Z"
    with_idle = [*running, pod("p-new", "", phase="Pending"), terminating]
    base, _ = await scores(running)
    draining, source = await scores(with_idle)
    assert source.asked == [("p-a", "p-b", "p-new", "p-old")]
    assert draining == base
    # Twice the power per running pod: one replica is 10 kW, a larger predicted rise.
    draw.update({"p-a": 10_000.0, "p-b": 10_000.0})
    heavy, _ = await scores(running)
    assert set(heavy) == set(base) == {"rack-a", "rack-b"}
    assert all(heavy[r] < base[r] for r in base)


RECIRCULATION = ("configmaps", "climatik-recirculation")
GOOD_A = "rack-a: {recirculationCPerKw: 3.0}\n"
"""rack-a's usable part: with it rack-b (no factor) is preferred, without it rack-a (by name)."""


async def reconcile_with(
    text: str, rounds: int = 2
) -> tuple[PlacementReconciler, RecordingClient, Events]:
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": text}}})
    rec, _, events, _ = reconciler(
        config(),
        [],
        static(RackSignals("rack-a", watts=10_000.0, inlet_c=22.0), COOL),
        client=client,
    )
    for _ in range(rounds):
        await rec.reconcile(f"{NS}/cap")
    return rec, client, events


def invalid_events(events: Events) -> list[str]:
    return [e[3] for e in events.recorded if e[2] == "RecirculationConfigInvalid"]


def preferred_first(rec: PlacementReconciler) -> str:
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    return found.preferred[0][0]


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("rack-b: [1, 2]\n", "rack rack-b: the entry is a list, not a mapping"),
        ("rack-b: {recirculationCPerKw: hot}\n", "rack rack-b: recirculationCPerKw 'hot'"),
        ("rack-b: {recirculationCPerKw: .nan}\n", "rack rack-b: recirculationCPerKw nan"),
        ("rack-b: {recirculationCPerKw: true}\n", "rack rack-b: recirculationCPerKw True"),
        ("rack-b: {inletRiseCPerKw: 0.4}\n", "rack rack-b: inletRiseCPerKw is a number"),
        (
            "rack-b: {inletRiseCPerKw: {rack-a: x, rack-b: 0.1}}\n",
            "rack rack-b: inletRiseCPerKw.rack-a 'x' is not a finite number",
        ),
        (
            "rack-b: {inletRiseCPerKw: {rack-a: .inf}}\n",
            "rack rack-b: inletRiseCPerKw.rack-a inf is not a finite number",
        ),
        (
            "rack-b: {inletRiseCPerKw: {rack-a: -0.2}}\n",
            "rack rack-b: inletRiseCPerKw.rack-a -0.2 is negative",
        ),
        (
            "rack-b: {inletRiseCPerKw: {rack-z: 0.3}}\n",
            "rack rack-b: inletRiseCPerKw.rack-z names a rack no node carries",
        ),
        (
            "rack-b: {recirculationCPerKw: -1.5}\n",
            "rack rack-b: recirculationCPerKw -1.5 is negative (heat never cools an inlet)",
        ),
        ("rack-z: {recirculationCPerKw: 1.0}\n", "rack rack-z names a rack no node carries"),
        (
            "no: {recirculationCPerKw: 1.0}\n",
            "key False is not a string (quote rack names in racks.yaml)",
        ),
        ("010: {recirculationCPerKw: 1.0}\n", "key 8 is not a string"),
        ("null: {recirculationCPerKw: 1.0}\n", "key None is not a string"),
        ("rack-b: {zone: [z1, z2]}\n", "rack rack-b: zone is a list, not a string; ignored"),
        ("rack-b: {rowPosition: left}\n", "rack rack-b: rowPosition 'left' is not a finite number"),
        (
            "rack-b: {inletRiseCPerKw: {8: 0.1}}\n",
            "rack rack-b: inletRiseCPerKw.8: the key is not a string",
        ),
        (
            f"rack-b: {{recirculationCPerKw: {'x' * 100_000}}}\n",
            "rack rack-b: recirculationCPerKw 'xxxxxxxxxx",
        ),
    ],
)
async def test_a_bad_part_of_the_recirculation_config_map_is_reported_once_and_ignored(
    bad: str, named: str
) -> None:
    rec, client, events = await reconcile_with(GOOD_A + bad)
    (message,) = invalid_events(events)  # two rounds, one Event
    assert message.startswith("ConfigMap llm/climatik-recirculation: racks.yaml: ")
    assert named in message
    assert "ignored" in message
    assert "estimate from power and inlet history" in message
    assert [e[1] for e in events.recorded if e[2] == "RecirculationConfigInvalid"] == ["Warning"]
    # The rest of the ConfigMap still applies: rack-a's factor puts rack-b first.
    assert preferred_first(rec) == "rack-b"
    # And the condition says so too.
    (condition,) = [p for p in client.patches if p[3] == "status"][-1][2]["status"]["conditions"]
    assert named in condition["message"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("rack-a: {recirculationCPerKw: 3.0\n", "racks.yaml: not valid YAML ("),
        ("- rack-a\n- rack-b\n", "racks.yaml: the document is a list, not a mapping"),
    ],
)
async def test_an_unusable_recirculation_document_is_reported_once_and_estimated(
    text: str, named: str
) -> None:
    rec, _, events = await reconcile_with(text)
    (message,) = invalid_events(events)
    assert message.startswith("ConfigMap llm/climatik-recirculation: ")
    assert named in message
    assert "all of it is ignored" in message
    # No factor at all (no history yet): equal racks, the first by name.
    assert preferred_first(rec) == "rack-a"


async def test_a_valid_recirculation_config_map_raises_nothing() -> None:
    _, client, events = await reconcile_with(GOOD_A + "rack-b: {recirculationCPerKw: 0.5}\n")
    assert invalid_events(events) == []
    (condition,) = [p for p in client.patches if p[3] == "status"][-1][2]["status"]["conditions"]
    assert "ConfigMap" not in condition["message"]


async def test_the_valid_part_of_a_column_still_steers_placement() -> None:
    # As the heat-matrix test above, with two unusable inlets in rack-b's column: what is left
    # (rack-b's heat lands mostly on rack-a) still makes rack-b the better place.
    cm = {
        "data": {
            "racks.yaml": (
                "rack-a: {recirculationCPerKw: 0.5, inletRiseCPerKw: {rack-a: 0.1, rack-b: 0.4}}\n"
                "rack-b: {recirculationCPerKw: 0.5,"
                " inletRiseCPerKw: {rack-a: 0.4, rack-b: 0.1, rack-z: 0.3, rack-q: warm}}\n"
            )
        }
    }
    signals = static(
        RackSignals("rack-a", watts=10_000.0, inlet_c=24.0),
        RackSignals("rack-b", watts=10_000.0, inlet_c=26.0),
    )
    signals.set_service_series(NS, (10_000.0,))
    rec, _, events, _ = reconciler(
        config(),
        [pod("p-a", "a-0"), pod("p-b", "b-0")],
        signals,
        client=RecordingClient({RECIRCULATION: cm}),
    )
    await rec.reconcile(f"{NS}/cap")
    assert preferred_first(rec) == "rack-b"
    (message,) = invalid_events(events)
    assert "inletRiseCPerKw.rack-q 'warm'" in message
    assert "inletRiseCPerKw.rack-z names a rack" in message


async def test_a_new_recirculation_problem_is_reported_again_and_a_fixed_one_clears() -> None:
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": "rack-b: [1]\n"}}})
    rec, _, events, _ = reconciler(config(), [], static(HOT_OVER, COOL), client=client)
    await rec.reconcile(f"{NS}/cap")
    client.objects[RECIRCULATION] = {"data": {"racks.yaml": "rack-b: {recirculationCPerKw: x}"}}
    await rec.reconcile(f"{NS}/cap")
    await rec.reconcile(f"{NS}/cap")
    assert len(invalid_events(events)) == 2
    assert "recirculationCPerKw 'x'" in invalid_events(events)[1]
    client.objects[RECIRCULATION] = {"data": {"racks.yaml": GOOD_A}}
    await rec.reconcile(f"{NS}/cap")
    (condition,) = [p for p in client.patches if p[3] == "status"][-1][2]["status"]["conditions"]
    assert "ConfigMap" not in condition["message"]
    # The same problem coming back is news again.
    client.objects[RECIRCULATION] = {"data": {"racks.yaml": "rack-b: [1]\n"}}
    await rec.reconcile(f"{NS}/cap")
    assert len(invalid_events(events)) == 3


async def test_a_config_map_without_the_key_is_reported() -> None:
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yml": GOOD_A}}})
    rec, _, events, _ = reconciler(config(), [], static(HOT_OVER, COOL), client=client)
    await rec.reconcile(f"{NS}/cap")
    (message,) = invalid_events(events)
    assert "has no key racks.yaml (keys: racks.yml)" in message


async def test_the_config_map_is_read_from_the_cache_not_asked_for() -> None:
    """Every reconcile used to GET the ConfigMap (~650 GETs a minute with 300 configs, issue
    15): it comes from the informer now, and a removed one means the estimate again."""
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": GOOD_A}}})
    client.errors[RECIRCULATION] = ApiError(403, {"reason": "Forbidden", "message": "no GETs"})
    same = static(RackSignals("rack-a", watts=10_000.0, inlet_c=22.0), COOL)
    rec, _, events, _ = reconciler(config(), [], same, client=client)
    await rec.reconcile(f"{NS}/cap")
    assert invalid_events(events) == []
    assert preferred_first(rec) == "rack-b"  # rack-a's factor applies
    del client.objects[RECIRCULATION]
    await rec.reconcile(f"{NS}/cap")
    assert invalid_events(events) == []
    assert preferred_first(rec) == "rack-a"  # no ConfigMap: no factor, no problem either


async def test_a_standby_reports_no_recirculation_problem() -> None:
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": "- rack-a\n"}}})
    client.write_gate = lambda: False  # type: ignore[attr-defined]
    rec, _, events, _ = reconciler(config(), [], static(HOT_OVER, COOL), client=client)
    await rec.reconcile(f"{NS}/cap")
    assert events.recorded == []


@pytest.mark.parametrize(
    ("text", "ok"),
    [(GOOD_A + "rack-b: {recirculationCPerKw: hot}\n", 0.0), (GOOD_A, 1.0)],
)
async def test_the_recirculation_config_state_is_a_metric(text: str, ok: float) -> None:
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": text}}})
    rec, _, _, metrics = reconciler(
        config(),
        [],
        static(RackSignals("rack-a", watts=10_000.0, inlet_c=22.0), COOL),
        client=client,
    )
    await rec.reconcile(f"{NS}/cap")
    value = metrics.registry.get_sample_value(
        "climatik_placement_recirculation_config_ok", {"config": f"{NS}/cap"}
    )
    assert value == ok


async def test_an_alias_bomb_in_the_config_map_does_not_stall_the_reconciler() -> None:
    # The anchors inside rack-b's entry (an unknown field is not a problem): its lines only.
    anchors = ", ".join(line.split(": ", 1)[1].strip() for line in ALIAS_BOMB.splitlines())
    bomb = f"rack-b: {{anchors: [{anchors}], recirculationCPerKw: *i, zone: *h}}\n"
    started = time.perf_counter()
    _, client, events = await reconcile_with(GOOD_A + bomb)
    assert time.perf_counter() - started < 1.0
    (message,) = invalid_events(events)
    assert "recirculationCPerKw a list of 9 items" in message
    (condition,) = [p for p in client.patches if p[3] == "status"][-1][2]["status"]["conditions"]
    assert "zone is a list" in condition["message"]


async def test_the_problem_survives_a_long_rack_list_in_the_condition() -> None:
    names = [f"rack-{i:03d}-" + "x" * 50 for i in range(100)]
    cfg = config()
    cfg["spec"]["rackConstraints"] = [{"rackId": n, "maxTemperature": 30} for n in names]
    signals = static(*(RackSignals(n, watts=10_000.0, inlet_c=35.0) for n in names))
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": "rack-q: {zone: z}\n"}}})
    rec, _, events, _ = reconciler(cfg, [], signals, client=client)
    await rec.reconcile(f"{NS}/cap")
    (problem,) = invalid_events(events)
    (condition,) = [p for p in client.patches if p[3] == "status"][-1][2]["status"]["conditions"]
    assert condition["reason"] == "RackOverLimit"
    assert len(condition["message"]) <= 4000
    assert condition["message"].startswith("over a limit: rack-000-")
    assert condition["message"].endswith(problem)


@pytest.mark.parametrize(
    ("told", "sent"), [("rack-b: [1]\n", 0), ("rack-b: {recirculationCPerKw: x}\n", 1)]
)
async def test_a_problem_the_condition_already_names_is_not_sent_again_after_a_restart(
    told: str, sent: int
) -> None:
    # The replica before the restart wrote the condition (naming the problem of `told`).
    _, before, _ = await reconcile_with(told, rounds=1)
    (written,) = [p for p in before.patches if p[3] == "status"][-1][2]["status"]["conditions"]
    # A fresh reconciler (no memory) sees the object with that condition.
    cfg = config()
    cfg["status"] = {"conditions": [written]}
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": "rack-b: [1]\n"}}})
    rec, _, events, _ = reconciler(cfg, [], static(HOT_OVER, COOL), client=client)
    await rec.reconcile(f"{NS}/cap")
    await rec.reconcile(f"{NS}/cap")
    assert len(invalid_events(events)) == sent


# -- pod-deletion-cost without `patch` on pods ---------------------------------------------------

FORBIDDEN = ApiError(403, {"reason": "Forbidden", "message": "pods is forbidden"})


def racks_condition(client: RecordingClient) -> dict[str, Any]:
    (condition,) = [p for p in client.patches if p[3] == "status"][-1][2]["status"]["conditions"]
    return dict(condition)


def deletion_costs_allowed(metrics: PlacementMetrics) -> float | None:
    return metrics.registry.get_sample_value(
        "climatik_placement_deletion_costs_allowed", {"config": f"{NS}/cap"}
    )


async def test_a_forbidden_deletion_cost_patch_leaves_placement_working_and_says_how_to_fix() -> (
    None
):
    now = [1000.0]
    pods = [pod("p-a", "a-0"), pod("p-b", "b-0")]
    hot_ok = RackSignals("rack-a", watts=20_000.0, inlet_c=28.0)
    client = RecordingClient()
    client.patch_errors["pods"] = FORBIDDEN
    rec, _, events, metrics = reconciler(
        config(), pods, static(hot_ok, COOL), client=client, clock=lambda: now[0]
    )
    for _ in range(3):
        result = await rec.reconcile(f"{NS}/cap")
        assert result == Result(requeue_after=7.0)  # no error, no retry storm
        now[0] += 7.0
    # Asked once: after the 403 neither the other pod nor later rounds ask again.
    assert client.refused == [("pods", "p-a")]
    # The rest of placement goes on: the webhook's preferences, the condition, cooling.
    found = rec.snapshot.lookup(NS, "chat")
    assert found is not None
    assert found.preferred[0][0] == "rack-b"
    condition = racks_condition(client)
    assert condition["reason"] == "WithinLimits"
    message = condition["message"]
    assert message.startswith("rack-b score")
    assert "Scale-in order is unavailable" in message
    assert f"patch pods in namespace {NS}" in message
    assert "rbac.podDeletionCost.namespaces" in message
    assert "deploy/overlays/pod-deletion-cost" in message
    (warning,) = [e for e in events.recorded if e[2] == "DeletionCostForbidden"]
    assert warning[1] == "Warning"
    assert warning[3] in message
    assert deletion_costs_allowed(metrics) == 0.0

    # Ten minutes later it asks again, once; still refused: no second Event.
    now[0] = 1000.0 + 600.0
    await rec.reconcile(f"{NS}/cap")
    assert client.refused == [("pods", "p-a")] * 2
    assert [e[2] for e in events.recorded].count("DeletionCostForbidden") == 1

    # Granted: the next try after the wait patches every pod and the note goes.
    del client.patch_errors["pods"]
    await rec.reconcile(f"{NS}/cap")
    assert [p[1] for p in client.patches if p[0] == "pods"] == []  # still waiting
    now[0] += 600.0
    await rec.reconcile(f"{NS}/cap")
    assert sorted(p[1] for p in client.patches if p[0] == "pods") == ["p-a", "p-b"]
    assert "Scale-in order" not in racks_condition(client)["message"]
    assert deletion_costs_allowed(metrics) == 1.0


async def test_a_restarted_controller_does_not_repeat_the_deletion_cost_warning() -> None:
    client = RecordingClient()
    client.patch_errors["pods"] = FORBIDDEN
    hot_ok = RackSignals("rack-a", watts=20_000.0, inlet_c=28.0)
    pods = [pod("p-a", "a-0")]
    rec, _, events, _ = reconciler(config(), pods, static(hot_ok, COOL), client=client)
    await rec.reconcile(f"{NS}/cap")
    assert [e[2] for e in events.recorded].count("DeletionCostForbidden") == 1
    cfg = config()
    cfg["status"] = {"conditions": [racks_condition(client)]}
    restarted, _, events2, _ = reconciler(cfg, pods, static(hot_ok, COOL), client=client)
    await restarted.reconcile(f"{NS}/cap")
    await restarted.reconcile(f"{NS}/cap")
    assert [e[2] for e in events2.recorded].count("DeletionCostForbidden") == 0


async def test_rack_readings_that_only_jitter_are_not_written_again() -> None:
    """Issue 15: the RacksWithinLimits message quotes per-rack power and inlet, which move a
    little on every reconcile; each config wrote its status every interval (~16 writes/s with
    500 configs). Readings within 5 % are not news until the refresh period."""
    now = [1000.0]
    source = static(HOT_OVER, COOL)
    rec, client, _, _ = reconciler(config(), [], source, clock=lambda: now[0])

    async def reconcile_and_apply() -> list[dict[str, Any]]:
        before = len(client.patches)
        await rec.reconcile(f"{NS}/cap")
        written = [p for _, _, p, sub in client.patches[before:] if sub == "status"]
        for patch in written:  # as the watch would bring the write back into the cache
            cached = thaw(rec._configs.store.get(f"{NS}/cap"))
            _store(rec._configs).upsert(apply_merge_patch(cached, patch))
        return written

    assert await reconcile_and_apply()
    source.set(RackSignals("rack-b", watts=10_200.0, inlet_c=22.1))  # noise
    now[0] += 30
    assert await reconcile_and_apply() == []
    source.set(RackSignals("rack-b", watts=16_000.0, inlet_c=22.1))  # a real change
    now[0] += 30
    assert await reconcile_and_apply()
    source.set(RackSignals("rack-b", watts=16_100.0, inlet_c=22.2))
    now[0] += 301  # the refresh period: figures are brought up to date anyway
    assert await reconcile_and_apply()


async def test_configs_reading_the_same_racks_share_one_history() -> None:
    """Issue 15: each config kept its own 720-sample rack history (about 190 KB a config, a
    gigabyte at 5,000 configs) and refitted it every reconcile. Racks are physical: configs
    reading them from the same source share one history, sampled once per half interval."""
    source = StaticRackSignalSource()
    now = [1000.0]
    rec, *_ = reconciler(config(), [], source, clock=lambda: now[0])
    other = config()
    other["metadata"]["name"] = "cap-2"
    _store(rec._configs).upsert(other)
    for i in range(12):
        pa, pb = 10_000.0 + 1_000.0 * (i % 3), 10_000.0 + 1_500.0 * (i % 4)
        source.set(
            RackSignals("rack-a", watts=pa, inlet_c=18.0 + 0.2 * pa / 1e3 + 0.6 * pb / 1e3),
            RackSignals("rack-b", watts=pb, inlet_c=18.0 + 0.1 * pa / 1e3 + 0.3 * pb / 1e3),
        )
        await rec.reconcile(f"{NS}/cap")
        await rec.reconcile(f"{NS}/cap-2")  # the same moment: no second sample
        now[0] += 7.0
    (history,) = rec._rack_observer.histories.values()
    assert len(history.samples) == 12
    assert history.estimates[None][1] is not None


async def test_the_heat_matrix_is_fitted_to_inlet_minus_the_measured_supply_air() -> None:
    """Issue 16: the cooling unit moves the supply air against the hottest inlet, so a fit of
    inlets alone found almost no recirculation. With the supply read, the fit recovers it."""
    source = StaticRackSignalSource()
    now = [1000.0]
    rec, *_ = reconciler(config(), [], source, clock=lambda: now[0])
    d = ((0.2, 0.6), (0.1, 0.3))  # °C per kW: rack-b heats rack-a most
    for i in range(12):
        pa, pb = 10_000.0 + 1_000.0 * (i % 3), 10_000.0 + 1_500.0 * (i % 4)
        rise = [d[r][0] * pa / 1e3 + d[r][1] * pb / 1e3 for r in (0, 1)]
        supply = 26.0 - max(rise)
        source.set(
            RackSignals("rack-a", watts=pa, inlet_c=supply + rise[0], supply_c=supply),
            RackSignals("rack-b", watts=pb, inlet_c=supply + rise[1], supply_c=supply),
        )
        await rec.reconcile(f"{NS}/cap")
        now[0] += 30.0
    (history,) = rec._rack_observer.histories.values()
    assert history.samples[-1][2] == (supply, supply)
    estimate = history.estimates[None][1]
    assert estimate is not None
    assert abs(estimate.matrix_c_per_kw[0][1] - 0.6) < 0.05


async def test_racks_placed_along_the_row_draw_the_estimate_toward_the_geometric_prior() -> None:
    """With every rack's `rowPosition` the estimate from history is drawn toward the prior (the
    twin's servers have had it since issue 19; racks had no layout); with only some racks
    placed it is the plain fit, one fit kept per layout."""
    text = "rack-a: {rowPosition: 0}\nrack-b: {rowPosition: 1}\n"
    client = RecordingClient({RECIRCULATION: {"data": {"racks.yaml": text}}})
    source = StaticRackSignalSource()
    now = [1000.0]
    rec, *_ = reconciler(config(), [], source, client=client, clock=lambda: now[0])
    for i in range(12):
        pa, pb = 10_000.0 + 1_000.0 * (i % 3), 10_000.0 + 1_500.0 * (i % 4)
        rise = [0.2 * pa / 1e3 + 0.6 * pb / 1e3, 0.1 * pa / 1e3 + 0.3 * pb / 1e3]
        source.set(
            RackSignals("rack-a", watts=pa, inlet_c=22.0 + rise[0], supply_c=22.0),
            RackSignals("rack-b", watts=pb, inlet_c=22.0 + rise[1], supply_c=22.0),
        )
        await rec.reconcile(f"{NS}/cap")
        now[0] += 30.0
    (history,) = rec._rack_observer.histories.values()
    layout = (PlacePosition(0.0, 0.5), PlacePosition(1.0, 0.5))
    assert list(history.estimates) == [layout]
    appended, estimate = history.estimates[layout]
    samples = list(history.samples)
    args = (
        ["rack-a", "rack-b"],
        [h[0] for h in samples[:appended]],
        [h[1] for h in samples[:appended]],
        [h[2] for h in samples[:appended]],
    )
    assert estimate == recirculation_from_history(*args, sample_s=7.0, positions=layout)
    assert estimate != recirculation_from_history(*args, sample_s=7.0)
    # One rack unplaced: the plain fit, kept beside the other (configs in other namespaces
    # may read the same racks with or without a layout).
    only_a = {"data": {"racks.yaml": "rack-a: {rowPosition: 0}\n"}}
    client.objects[RECIRCULATION] = only_a
    await rec.reconcile(f"{NS}/cap")
    assert set(history.estimates) == {layout, None}


async def test_a_rack_gone_from_the_nodes_is_gone_from_the_metrics() -> None:
    unconstrained = config(rackConstraints=[{"rackId": "rack-a", "maxPower": 40_000}])
    nodes = StoreCache(node("a-0", "rack-a"), node("b-0", "rack-b"))
    rec, _, _, metrics = reconciler(
        unconstrained, [pod("p-a", "a-0")], static(HOT_OVER, COOL), nodes=nodes
    )
    await rec.reconcile(f"{NS}/cap")

    def racks_seen() -> set[str]:
        return {
            sample.labels["rack"]
            for family in metrics.registry.collect()
            if family.name == "climatik_rack_admissible"
            for sample in family.samples
        }

    assert racks_seen() == {"rack-a", "rack-b"}
    nodes.store.delete("b-0")  # rack-b's only node is gone
    await rec.reconcile(f"{NS}/cap")
    assert racks_seen() == {"rack-a"}
    assert scores_by_rack(metrics).keys() == {"rack-a"}


READY = {
    "type": "Ready",
    "status": "True",
    "reason": "WithinCap",
    "message": "power-cap reconciler",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
    "observedGeneration": 3,
}


class LosesTheFirstStatusRace(RecordingClient):
    """The power-cap reconciler writes its `Ready` condition just before placement's first
    status write, which the API server therefore refuses (409); a read returns the config as
    that write left it."""

    def __init__(self) -> None:
        fresh = config()
        fresh["metadata"]["resourceVersion"] = "8"
        fresh["status"] = {"conditions": [READY]}
        super().__init__({("powercappingconfigs", "cap"): fresh})
        self.lost = 0

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Any:
        if subresource == "status" and not self.lost:
            self.lost += 1
            raise ApiError(409, {"reason": "Conflict"})
        return await super().merge_patch(resource, name, patch, namespace, subresource=subresource)


async def test_a_lost_status_race_is_written_again_on_a_fresh_read() -> None:
    """One retry strategy for status writes: the condition is recomputed on the config as the
    API server has it now (the peer's condition kept), not left to a backoff requeue."""
    client = LosesTheFirstStatusRace()
    rec, *_ = reconciler(config(), [], static(HOT_OVER, COOL), client=client)
    assert await rec.reconcile(f"{NS}/cap") == Result(requeue_after=7.0)
    assert client.lost == 1
    (written,) = [p for p in client.patches if p[3] == "status"]
    body = written[2]
    assert body["metadata"] == {"resourceVersion": "8"}
    assert [c["type"] for c in body["status"]["conditions"]] == ["Ready", "RacksWithinLimits"]
    assert body["status"]["conditions"][0] == READY


def ready(p: dict[str, Any]) -> dict[str, Any]:
    p["status"]["containerStatuses"] = [{"name": "vllm", "ready": True}]
    return p


MOVING = {"migration": {"enabled": True, "minGainCelsius": 0.2, "minIntervalSeconds": 60}}
HOT_RACK_A = {
    "data": {
        "racks.yaml": (
            "rack-a: {recirculationCPerKw: 0.6, inletRiseCPerKw: {rack-a: 0.5, rack-b: 0.1}}\n"
            "rack-b: {recirculationCPerKw: 0.3, inletRiseCPerKw: {rack-a: 0.1, rack-b: 0.2}}\n"
        )
    }
}


def migrating(
    client: RecordingClient, now: list[float]
) -> tuple[PlacementReconciler, Events, PlacementMetrics]:
    """Two ready pods on the hot rack-a, 2 kW each, and migration on (one move a minute)."""
    cfg = config()
    cfg["spec"]["placement"].update(MOVING)
    signals = static(
        RackSignals("rack-a", watts=30_000.0, inlet_c=27.0),
        RackSignals("rack-b", watts=12_000.0, inlet_c=21.0),
    )
    signals.set_service_series(NS, (4_000.0,))
    client.objects[("configmaps", "climatik-recirculation")] = HOT_RACK_A
    nodes = StoreCache(node("a-0", "rack-a"), node("a-1", "rack-a"), node("b-0", "rack-b"))
    rec, _, events, metrics = reconciler(
        cfg,
        [ready(pod("p-1", "a-0")), ready(pod("p-2", "a-1"))],
        signals,
        client=client,
        clock=lambda: now[0],
        nodes=nodes,
    )
    return rec, events, metrics


def migrations(metrics: PlacementMetrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "climatik_placement_migrations_total", {"config": f"{NS}/cap", "outcome": outcome}
    )


async def test_a_move_evicts_one_pod_once_per_interval() -> None:
    now = [1000.0]
    client = RecordingClient()
    rec, events, metrics = migrating(client, now)
    await rec.reconcile(f"{NS}/cap")
    assert client.requests == [("POST", f"/api/v1/namespaces/{NS}/pods/p-1/eviction")]
    (moved,) = [e for e in events.recorded if e[2] == "ReplicaMigrated"]
    assert "from rack-a to rack-b" in moved[3]
    assert migrations(metrics, "evicted") == 1.0
    now[0] += 30.0
    await rec.reconcile(f"{NS}/cap")
    assert len(client.requests) == 1  # within the interval
    now[0] += 30.0
    await rec.reconcile(f"{NS}/cap")
    assert len(client.requests) == 2


async def test_a_forbidden_eviction_is_said_once_and_goes_when_migration_is_off() -> None:
    now = [1000.0]
    client = RecordingClient()
    client.request_error = FORBIDDEN
    rec, events, metrics = migrating(client, now)
    for _ in range(3):
        assert await rec.reconcile(f"{NS}/cap") == Result(requeue_after=7.0)
        now[0] += 30.0
    assert len(client.requests) == 2  # once a minute, not every round
    (warning,) = [e for e in events.recorded if e[2] == "MigrationForbidden"]
    assert warning[1] == "Warning"
    message = racks_condition(client)["message"]
    assert "Replica migration is unavailable" in message
    assert "pods/eviction" in message
    assert migrations(metrics, "forbidden") == 2.0
    # The user turns migration off: the note goes with it.
    off = config()
    off["metadata"]["generation"] = 4
    _store(rec._configs).upsert(off)
    await rec.reconcile(f"{NS}/cap")
    assert "Replica migration" not in racks_condition(client)["message"]
