"""Which nodes the power-cap reconciler reads for the idle draw: those of the constrained racks
without the targets' pods, and, without rack constraints, the racked nodes when the config's own
query measures nodes (the twin learns the idle draw on a site without rack limits too)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from climatik.domain.config import (
    PlacementConfig,
    PowerCappingConfig,
    PrometheusMetric,
    RackConstraint,
    TargetKind,
)
from climatik.kube.store import Store
from climatik.policies.observations import IDLE_SETTLE_ROUNDS, IdlePower
from climatik.reconcilers.powercap_measure import CapMeasurer, CapSources
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.targets import ResolvedTarget
from climatik.sources.power_queries import TargetPods
from climatik.sources.power_readings import Outcome, Reading, TargetMeasurement
from climatik.sources.prometheus_pool import PrometheusPool
from climatik.sources.racks import RackNodes, RackSignals

NODES = {"a-1": "rack-a", "a-2": "rack-a", "b-1": "rack-b", "b-2": "rack-b", "control": None}


@dataclass
class _Nodes:
    store: Store


@dataclass
class _Racks:
    """Answers every rack and node with 1 kW and remembers what it was asked."""

    asked: list[RackNodes] = field(default_factory=list)

    @property
    def history_key(self) -> Hashable:
        return "recorded"

    async def read_racks(self, racks: Sequence[RackNodes]) -> Mapping[str, RackSignals]:
        self.asked.extend(racks)
        return {r.rack_id: RackSignals(r.rack_id, watts=1000.0) for r in racks}

    async def service_power_series(self, namespace: str, pods: Sequence[str]) -> tuple[float, ...]:
        return ()


class _Power:
    async def measure_targets(
        self, targets: Sequence[TargetPods]
    ) -> Mapping[str, TargetMeasurement]:
        return {t.key: TargetMeasurement(t.key, Reading(500.0, 0.0, None), None) for t in targets}

    async def measure_total(self, query: str, *, servers: int = 1) -> Outcome:
        return Reading(4000.0, 0.0, query)


def nodes() -> _Nodes:
    store = Store()
    for name, rack in NODES.items():
        labels = {PlacementConfig().rack_label_key: rack} if rack else {}
        store.upsert(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        )
    return _Nodes(store)


async def _never() -> aiohttp.ClientSession:
    raise AssertionError("no Prometheus is asked here")


TARGET = ResolvedTarget(
    kind=TargetKind.SCALED_OBJECT,
    name="chat",
    namespace="llm",
    min_replicas=1,
    applied_max_replicas=4,
    user_max_replicas=4,
    current_replicas=1,
    pods=("chat-0",),
    pod_nodes=("a-1",),
    obj={},
)


SETTLED = IdlePower(free_rounds=dict.fromkeys(NODES, IDLE_SETTLE_ROUNDS))
"""Every node free for long enough to read idle draw from, as far as the history goes."""


async def idle_nodes_read(config: PowerCappingConfig, idle: IdlePower = SETTLED) -> list[str]:
    racks = _Racks()
    measurer = CapMeasurer(CappingSettings(), PrometheusPool(_never), nodes())
    _, rack_round = await measurer.measure(config, CapSources(_Power(), racks), [TARGET], idle)
    asked = [r.rack_id.removeprefix("node/") for r in racks.asked if r.rack_id.startswith("node/")]
    assert len(rack_round.idle_node_watts) == len(asked)
    return asked


def config(
    *, metrics: tuple[PrometheusMetric, ...] = (), racks: tuple[RackConstraint, ...] = ()
) -> PowerCappingConfig:
    return PowerCappingConfig(
        namespace="llm", name="cap", generation=1, power_cap_w=9000, metrics=metrics, racks=racks
    )


SITE = (PrometheusMetric("http://prometheus:9090", "sum(node_watts)"),)


async def test_a_rack_constrained_config_reads_its_racks_nodes_without_its_pods() -> None:
    constrained = config(racks=(RackConstraint("rack-b", max_power_w=5000.0),))
    assert await idle_nodes_read(constrained) == ["b-1", "b-2"]


async def test_a_config_measuring_its_nodes_reads_the_racked_nodes_without_its_pods() -> None:
    """Not the control-plane node (no rack label): its draw is no GPU server's idle draw."""
    assert await idle_nodes_read(config(metrics=SITE)) == ["a-2", "b-1", "b-2"]


async def test_a_node_just_freed_is_not_read_for_the_idle_draw() -> None:
    """Its lagged reading still holds its replica's work; the first round sees every node anew."""
    assert await idle_nodes_read(config(metrics=SITE), IdlePower()) == []
    recent = IdlePower(free_rounds={"a-2": IDLE_SETTLE_ROUNDS, "b-1": 1})
    assert await idle_nodes_read(config(metrics=SITE), recent) == ["a-2"]


async def test_a_config_measuring_only_its_pods_reads_no_node() -> None:
    """Its measurement leaves idle nodes out, so no idle draw is credited."""
    assert await idle_nodes_read(config()) == []
