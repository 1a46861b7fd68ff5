"""What the power-cap reconciler observes of one config each round, within a time budget.

A config's sources (its targets' power and tokens, the scope's own query, its racks) are built
from its spec; `CapMeasurer.measure` then reads targets, scope and racks at once, within
`MEASURE_BUDGET` of the reconcile deadline, so a Prometheus that answers too slowly is "no data"
(the policy holds, the condition says why) rather than a reconcile cut at its deadline. It turns
readings into the policy's observations (`target_observation`) and reads the cap in force
(`effective_cap`). It only reads (Prometheus and the node cache): a contract keeps the API client
out of this module.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import aiohttp

from climatik.api.status import peer_status
from climatik.api.status_models import DeferrablePlanStatus, EffectiveCapSource
from climatik.domain.capping import TargetObservation
from climatik.domain.config import PowerCappingConfig
from climatik.kube.cache import Cache
from climatik.kube.json import JsonObject, ObjectMeta, strings
from climatik.kube.store import FrozenMapping
from climatik.policies.observations import (
    IDLE_SAMPLE_NODES,
    IdlePower,
    RackReading,
    demand_tokens_per_s,
    group_nodes_by_rack,
    observe_target,
    track_free_nodes,
)
from climatik.reconcilers.result import TerminalError
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.targets import ResolvedTarget
from climatik.sources.address import AddressPolicy
from climatik.sources.breaker import BreakerSettings
from climatik.sources.plausibility import PlausibilityLimits
from climatik.sources.power import PodQuerier, PowerSource, PrometheusPowerSource
from climatik.sources.power_queries import TargetPods, TokensQueryConfig, power_query_config_for
from climatik.sources.power_readings import (
    Reading,
    TargetMeasurement,
    judges_gpu_power,
    outcome_message,
)
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_pool import PrometheusPool
from climatik.sources.prometheus_results import NoData, PrometheusError
from climatik.sources.promql import QueryTemplateError
from climatik.sources.racks import (
    PrometheusRackSignalSource,
    RackNodes,
    RackQuerier,
    RackSignalQueries,
    RackSignalSource,
    rack_queries_for,
)

MEASURE_BUDGET = 0.6
"""The share of the reconcile deadline measuring may take; the rest is for deciding, writing
ceilings and status (a reconcile cut at its deadline writes nothing and backs off)."""

_NODE_PREFIX = "node/"
"""Marks a single node's reading among the rack readings (rack ids are label values, which
cannot contain a slash)."""


def prometheus_pool(
    settings: CappingSettings, session_factory: Callable[[], Awaitable[aiohttp.ClientSession]]
) -> PrometheusPool:
    """The shared Prometheus read layer the settings ask for (one per controller)."""
    return PrometheusPool(
        session_factory,
        cache_ttl_s=settings.cache_ttl_in_force_s,
        breaker=BreakerSettings(
            settings.prometheus_breaker_initial_s, settings.prometheus_breaker_max_s
        ),
    )


@dataclass(frozen=True, slots=True)
class CapSources:
    """Where one config's readings come from: its targets' power and tokens, and its racks."""

    power: PowerSource
    racks: RackSignalSource
    judges_gpu_power: bool = False
    """Whether the preset has GPU power series to judge GPU pods by (`GpuPowerMeasured`)."""


@dataclass(frozen=True, slots=True)
class RackRound:
    """This round's rack readings and the measured watts of rack nodes hosting no target pod."""

    readings: tuple[RackReading, ...] = ()
    idle_node_watts: Mapping[str, float | None] = field(default_factory=dict)
    """Per node read for the idle draw (free long enough), its watts."""
    free_nodes: tuple[str, ...] = ()
    """The constrained racks' nodes hosting no target pod this round."""


@dataclass(frozen=True, slots=True)
class Measured:
    """This round's power (and tokens) per target and for the whole scope."""

    per_target: Mapping[str, TargetMeasurement]
    scope_w: float | None
    problem: str | None
    """Why some readings are unusable (None when every reading is good)."""
    problem_reason: str


class ReplayQuerier(PodQuerier, RackQuerier, Protocol):
    """What a config's sources read through: the shared layer live, a client that reads a
    past time in a replay (`tests/integration/test_replay.py`)."""


def sources_for(
    config: PowerCappingConfig,
    client: ReplayQuerier,
    settings: CappingSettings,
    *,
    clock: Callable[[], float] = time.time,
) -> CapSources:
    """The config's sources over `client`, judging sample ages at `clock` (Unix seconds);
    TerminalError for a bad query template."""
    try:
        power = power_query_config_for(config.power_measurement)
        racks = rack_queries_for(
            config.power_measurement,
            # Rack caps need this instant's readings only, no history.
            RackSignalQueries(rack_label=settings.rack_label, history_window_s=0),
        )
    except QueryTemplateError as error:
        raise TerminalError(f"spec.powerMeasurement: {error}") from error
    plausibility = PlausibilityLimits(max_watts_per_server=settings.max_plausible_watts_per_server)
    window_s = settings.tokens_window_s
    tokens = (
        TokensQueryConfig()
        if window_s is None
        else TokensQueryConfig(window=f"{math.ceil(window_s)}s")
    )
    return CapSources(
        PrometheusPowerSource(
            client, power=power, tokens=tokens, plausibility=plausibility, clock=clock
        ),
        PrometheusRackSignalSource(
            client, racks, power=power, plausibility=plausibility, clock=clock
        ),
        judges_gpu_power=judges_gpu_power(power),
    )


class CapMeasurer:
    """Builds configs' sources and measures them, for one power-cap reconciler."""

    def __init__(
        self, settings: CappingSettings, prometheus: PrometheusPool, nodes: Cache[FrozenMapping]
    ) -> None:
        self._settings = settings
        self._prometheus = prometheus
        self._nodes = nodes

    def sources(self, config: PowerCappingConfig) -> CapSources:
        """The config's sources; TerminalError when it cannot be measured as it stands (no
        Prometheus to ask, a bad query template): it waits for the spec to change."""
        address = config.prometheus_address(self._settings.prometheus_address)
        if address is None:
            msg = (
                "no Prometheus to ask: set spec.powerMeasurement.prometheusAddress (or "
                "CLIMATIK_CAPPING__PROMETHEUS_ADDRESS on the controller)"
            )
            raise TerminalError(msg)
        client = self._prometheus.querier(
            address,
            PrometheusSettings(
                timeout_s=self._settings.prometheus_timeout_s,
                max_sample_age_s=config.fail_safe.max_metric_age_s,
                address_policy=AddressPolicy.from_hosts(self._settings.allowed_hosts),
            ),
        )
        return sources_for(config, client, self._settings)

    async def measure(
        self,
        config: PowerCappingConfig,
        sources: CapSources,
        targets: Sequence[ResolvedTarget],
        idle: IdlePower | None = None,
    ) -> tuple[Measured, RackRound]:
        """Targets, scope and racks at once, within `MEASURE_BUDGET` of the reconcile deadline.

        A Prometheus that answers, but slowly (each query inside its own timeout, so its breaker
        never trips), would otherwise have the reconcile cut at its deadline before it wrote
        `MetricsAvailable=False` or applied the fail-safe, and retried with a growing backoff:
        past the budget, what is not measured is no data, and the reconcile goes on."""
        budget_s = MEASURE_BUDGET * self._settings.reconcile_timeout_s
        try:
            async with asyncio.timeout(budget_s), asyncio.TaskGroup() as group:
                measuring = group.create_task(self._measure(config, sources.power, targets))
                observing = group.create_task(
                    self._observe_racks(config, sources.racks, targets, idle or IdlePower())
                )
        except TimeoutError:
            problem = (
                f"the power queries did not finish within {budget_s:g} s "
                f"({MEASURE_BUDGET:.0%} of CLIMATIK_CAPPING__RECONCILE_TIMEOUT_S): the "
                "Prometheus answers too slowly"
            )
            return Measured({}, None, problem, "PrometheusTimeout"), RackRound()
        return measuring.result(), observing.result()

    async def _measure(
        self,
        config: PowerCappingConfig,
        source: PowerSource,
        targets: Sequence[ResolvedTarget],
    ) -> Measured:
        async with asyncio.TaskGroup() as group:
            per_target_task = group.create_task(
                source.measure_targets(
                    [
                        TargetPods(t.key, t.namespace, t.pods, t.newest_pod_created_s, t.gpu_pods)
                        for t in targets
                    ]
                )
            )
            # The design document's own query measures the whole capped scope. The scope may
            # span the cluster: its plausible power is bounded per node.
            scope_task = (
                group.create_task(
                    source.measure_total(config.metrics[0].query, servers=len(self._nodes.store))
                )
                if config.metrics
                else None
            )
        per_target = per_target_task.result()
        problems = [
            (m.watts, f"{m.key}: {outcome_message(m.watts)}")
            for m in per_target.values()
            if not isinstance(m.watts, Reading)
        ]
        scope_w: float | None
        if scope_task is not None:
            scope = scope_task.result()
            scope_w = scope.value if isinstance(scope, Reading) else None
            if not isinstance(scope, Reading):
                problems.append((scope, f"metrics[0].query: {outcome_message(scope)}"))
        elif any(not isinstance(m.watts, Reading) for m in per_target.values()):
            scope_w = None
        else:
            scope_w = sum(
                m.watts.value for m in per_target.values() if isinstance(m.watts, Reading)
            )
        if not problems:
            return Measured(per_target, scope_w, None, "MetricsAvailable")
        first = problems[0][0]
        reason = first.reason if isinstance(first, PrometheusError) else f"NoData{_nodata(first)}"
        return Measured(per_target, scope_w, "; ".join(p[1] for p in problems), reason)

    async def _observe_racks(
        self,
        config: PowerCappingConfig,
        source: RackSignalSource,
        targets: Sequence[ResolvedTarget],
        idle: IdlePower,
    ) -> RackRound:
        """The constrained racks' readings, and up to `IDLE_SAMPLE_NODES` of their nodes that
        have hosted none of the targets' pods for `IDLE_SETTLE_ROUNDS` decisions (counting this
        one; the longest free first) read on their own (the rack query over one node), for the
        idle draw.

        Without rack constraints, a config whose own query measures the scope's nodes
        (`metrics`) still reads the racked nodes (those with the rack label; not control-plane
        or CPU-only nodes) without its pods for the idle draw: its policy credits that draw
        (`ceiling_settings`), as the twin's does on a site without rack limits (a replay of
        `default`'s peak, `tests/integration/test_replay.py`, kept one chat replica too few
        from the fifth interval on without it)."""
        if not config.racks and not config.metrics:
            return RackRound()
        grouping = group_nodes_by_rack(
            (
                (str(ObjectMeta.of(node).raw["name"]), strings(ObjectMeta.of(node).raw, "labels"))
                for node in self._nodes.store.objects()
            ),
            config.placement.rack_label_key,
        )
        busy = {node for t in targets for node in t.pod_nodes if node}
        nodes = {r.rack_id: grouping.nodes_by_rack.get(r.rack_id, ()) for r in config.racks}
        racked = nodes.values() if config.racks else grouping.nodes_by_rack.values()
        free_nodes = sorted({n for rack in racked for n in rack} - busy)
        settled = track_free_nodes(idle, free_nodes).settled_nodes()
        idle_nodes = settled[:IDLE_SAMPLE_NODES]
        readings = await source.read_racks(
            [
                *(RackNodes(rack_id, rack_nodes) for rack_id, rack_nodes in nodes.items()),
                *(RackNodes(f"{_NODE_PREFIX}{n}", (n,)) for n in idle_nodes),
            ]
        )

        racks = []
        for constraint in config.racks:
            reading = readings.get(constraint.rack_id)
            free = sum(1 for n in nodes[constraint.rack_id] if n not in busy)
            racks.append(
                RackReading(
                    rack_id=constraint.rack_id,
                    watts=reading.watts if reading is not None else None,
                    inlet_c=reading.inlet_c if reading is not None else None,
                    max_watts=constraint.max_power_w,
                    max_inlet_c=constraint.max_temperature_celsius,
                    free_nodes=free if nodes[constraint.rack_id] else None,
                )
            )
        idle_w = {
            n: readings[f"{_NODE_PREFIX}{n}"].watts
            for n in idle_nodes
            if f"{_NODE_PREFIX}{n}" in readings
        }
        return RackRound(tuple(racks), idle_w, tuple(free_nodes))


def target_observation(
    target: ResolvedTarget,
    measured: TargetMeasurement | None,
    planned_max_replicas: int | None = None,
) -> TargetObservation:
    """The policy's view of a target; `measured=None` holds its ceiling like missing data.

    Its demand is what the twin gives the policy too (`demand_tokens_per_s`): the tokens it
    serves plus its vLLM backlog's tokens; where the backlog is not exported there is none, and
    the policy charges every replica full load. A deferrable target with a deadline has the
    carbon plan's ceiling (`planned_max_replicas`) for its maximum, never above the user's own
    nor below their minimum."""
    user_max = target.user_max_replicas
    if planned_max_replicas is not None:
        user_max = max(target.min_replicas, min(user_max, planned_max_replicas))
    return observe_target(
        name=target.name,
        current_replicas=target.current_replicas,
        min_replicas=target.min_replicas,
        user_max_replicas=user_max,
        applied_max_replicas=target.applied_max_replicas,
        watts=measured.watts_or_none if measured else None,
        tokens_per_s=measured.tokens_per_s_or_none if measured else None,
        limited_by_ceiling=target.limited_by_ceiling,
        priority=target.priority,
        deferrable=target.deferrable,
        demand_tokens_per_s=(
            demand_tokens_per_s(
                measured.tokens_per_s_or_none,
                measured.waiting_requests_or_none,
                measured.tokens_per_request,
            )
            if measured
            else None
        ),
    )


def effective_cap(obj: JsonObject, config: PowerCappingConfig) -> tuple[float, EffectiveCapSource]:
    """The carbon reconciler's cap when it has set one for this spec, else powerCapLimit.

    Read through the typed status like every peer's field: a status this version cannot read
    sets no carbon cap."""
    status = peer_status(obj)
    carbon_cap = status.effective_cap_watts
    if (
        config.carbon is not None
        and status.effective_cap_source is EffectiveCapSource.CARBON
        and carbon_cap is not None
        and 0 < carbon_cap <= config.power_cap_w
    ):
        return carbon_cap, EffectiveCapSource.CARBON
    return config.power_cap_w, EffectiveCapSource.STATIC


def _nodata(outcome: object) -> str:
    return str(outcome.reason) if isinstance(outcome, NoData) else ""


def planned_max_replicas(
    plans: Sequence[DeferrablePlanStatus] | None, kind: str, name: str, now: datetime
) -> int | None:
    """The carbon plan's ceiling for a target while it is fresh; None without one (the user's
    maximum then applies: a planner that stopped never starves the work)."""
    for plan in plans or ():
        if str(plan.kind) == kind and plan.name == name and now < plan.valid_until:
            return plan.planned_max_replicas
    return None
