"""Per-rack signals for placement and cooling: power, inlet, exhaust, airflow, cooling power.

Rack-aware placement (design document §7, §10.4.1) needs, per rack, its power and inlet
temperature, and where a site exports them its exhaust temperature, airflow, the power of the
cooling unit serving it and the supply-air temperature; power smoothing (§10.3) needs the recent
power history of each rack and of the service being placed. None of these has a standard metric
name, so every quantity is a configurable PromQL query, in two forms: a template using
`$rack`/`$nodes` runs once per rack; any other query runs once and its samples are matched to
racks by a rack label. This is the one reader of rack signals: power capping (rack caps, idle
node power) and placement both read racks through it.

Guarantees: a quantity whose query is not configured, fails, or returns nothing usable is `None`
for that rack (never 0), with the reason kept in `problems` so status and Events can say what to
fix; one failing query never hides the others. Measurements are untrusted: a value outside the
bounds of `climatik.sources.plausibility` (negative or absurd power, air below -30 or above
100 °C, ...) is not usable either, and a history point outside them is missing (NaN).
`StaticRackSignalSource` serves fixed, settable readings (dry runs, tests, sites that push
readings some other way) through the same protocol.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol

from climatik.domain.config import PowerMeasurementConfig
from climatik.sources import promql
from climatik.sources.plausibility import PlausibilityLimits, PlausibleRange
from climatik.sources.power_queries import (
    GroupedPowerQueries,
    GroupedQuery,
    PowerQueryConfig,
    build_grouped_power_queries,
    build_power_query,
)
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_results import (
    InstantResult,
    Matrix,
    NoData,
    PrometheusError,
    RangeResult,
    Vector,
)

__all__ = [
    "PrometheusRackSignalSource",
    "RackNodes",
    "RackSignalQueries",
    "RackSignalSource",
    "RackSignals",
    "StaticRackSignalSource",
    "build_rack_query",
    "is_per_rack",
    "rack_queries_for",
]

DEFAULT_RACK_LABEL: Final = "rack"
# Kepler >= 0.10 node power over a rack's nodes (node_name is Kepler's constant label).
DEFAULT_RACK_POWER_QUERY: Final = (
    'sum(kepler_node_cpu_watts{zone="package",node_name=~"$nodes"})'
    ' + (sum(kepler_node_gpu_watts{node_name=~"$nodes"}) or vector(0))'
)

Quantity = Literal["watts", "inlet_c", "exhaust_c", "airflow_m3_per_s", "cooling_watts", "supply_c"]
QUANTITIES: tuple[Quantity, ...] = (
    "watts",
    "inlet_c",
    "exhaust_c",
    "airflow_m3_per_s",
    "cooling_watts",
    "supply_c",
)


@dataclass(frozen=True, slots=True)
class RackNodes:
    """A rack and the nodes in it (nodes carry the rack label)."""

    rack_id: str
    nodes: tuple[str, ...]


def is_per_rack(query: str) -> bool:
    """True when the query selects one rack itself (`$rack`/`$nodes`)."""
    return bool(promql.template_placeholders(query) & {"rack", "nodes"})


def build_rack_query(query: str, rack: RackNodes) -> str:
    return promql.render_template(query, rack=rack.rack_id, nodes=rack.nodes)


@dataclass(frozen=True, slots=True)
class RackSignals:
    """What is known about one rack now; `None` is "not measured", never zero."""

    rack_id: str
    watts: float | None = None
    inlet_c: float | None = None
    exhaust_c: float | None = None
    airflow_m3_per_s: float | None = None
    cooling_watts: float | None = None
    """Power of the cooling unit(s) serving the rack."""
    supply_c: float | None = None
    """Supply-air temperature reaching the rack."""
    power_history_w: tuple[float, ...] = ()
    """Recent rack power on the source's history grid, oldest first (NaN where missing)."""
    problems: tuple[str, ...] = ()
    """Why a configured quantity is missing, one line each."""


@dataclass(frozen=True, slots=True)
class RackSignalQueries:
    """PromQL per quantity; `None` means the site does not export it.

    Each query may use `$rack` (the rack id) and `$nodes` (a regex alternation of the rack's
    nodes) inside double quotes; without either it must return one series per rack labelled
    with `rack_label`. Units: watts, °C, m³/s.
    """

    power_query: str | None = DEFAULT_RACK_POWER_QUERY
    inlet_temperature_query: str | None = None
    exhaust_temperature_query: str | None = None
    airflow_query: str | None = None
    cooling_power_query: str | None = None
    supply_temperature_query: str | None = None
    rack_label: str = DEFAULT_RACK_LABEL
    history_window_s: float = 3600.0
    """How much rack and service power history to fetch for smoothing; 0 disables it."""
    history_step_s: float = 60.0

    def __post_init__(self) -> None:
        promql.check_label_name(self.rack_label)
        for query in self.by_quantity().values():
            if query is not None:
                unknown = promql.template_placeholders(query) - {"rack", "nodes"}
                if unknown:
                    names = ", ".join(f"${u}" for u in sorted(unknown))
                    raise promql.QueryTemplateError(
                        f"a rack query can use $rack and $nodes, not {names}"
                    )
        if self.history_window_s < 0 or self.history_step_s <= 0:
            raise ValueError("history_window_s must be >= 0 and history_step_s > 0")

    def by_quantity(self) -> dict[Quantity, str | None]:
        return {
            "watts": self.power_query,
            "inlet_c": self.inlet_temperature_query,
            "exhaust_c": self.exhaust_temperature_query,
            "airflow_m3_per_s": self.airflow_query,
            "cooling_watts": self.cooling_power_query,
            "supply_c": self.supply_temperature_query,
        }


def rack_queries_for(
    measurement: PowerMeasurementConfig, site: RackSignalQueries | None = None
) -> RackSignalQueries:
    """The rack queries a PowerCappingConfig's `powerMeasurement` asks for, over the site's
    (the controller's settings: rack label, exhaust, airflow, cooling, supply, history):
    `rackPowerQuery` replaces the default Kepler node power over the rack's nodes, and
    `rackTemperatureQuery` is the inlet query (none by default). Raises `QueryTemplateError`
    for a query with placeholders a rack query cannot have."""
    site = site if site is not None else RackSignalQueries()
    return replace(
        site,
        power_query=measurement.rack_power_query or DEFAULT_RACK_POWER_QUERY,
        inlet_temperature_query=measurement.rack_temperature_query,
    )


class RackSignalSource(Protocol):
    """What the placement reconciler needs from a rack backend."""

    @property
    def history_key(self) -> Hashable:
        """Where the readings come from: two sources with equal keys read the same racks the
        same way, so one history of their readings serves both (every config of a cluster)."""
        ...

    async def read_racks(self, racks: Sequence[RackNodes]) -> Mapping[str, RackSignals]:
        """Signals for every rack asked about (a rack with no data has all fields None)."""
        ...

    async def service_power_series(self, namespace: str, pods: Sequence[str]) -> tuple[float, ...]:
        """Recent total power of `pods` on the rack history grid, oldest first; () if unknown."""
        ...


class StaticRackSignalSource:
    """Fixed readings, replaceable at any time with `set`; racks not set have no data."""

    def __init__(
        self,
        signals: Mapping[str, RackSignals] | None = None,
        service_series: Mapping[str, tuple[float, ...]] | None = None,
    ) -> None:
        self._signals = dict(signals or {})
        self._service_series = dict(service_series or {})

    @property
    def history_key(self) -> Hashable:
        return ("static", id(self))

    def set(self, *signals: RackSignals) -> None:
        for s in signals:
            self._signals[s.rack_id] = s

    def set_service_series(self, namespace: str, series: tuple[float, ...]) -> None:
        """The series answered for every service of `namespace`."""
        self._service_series[namespace] = series

    async def read_racks(self, racks: Sequence[RackNodes]) -> Mapping[str, RackSignals]:
        return {r.rack_id: self._signals.get(r.rack_id, RackSignals(r.rack_id)) for r in racks}

    async def service_power_series(self, namespace: str, pods: Sequence[str]) -> tuple[float, ...]:
        del pods
        return self._service_series.get(namespace, ())


class RackQuerier(Protocol):
    """The part of `PrometheusClient` used here (instant and range queries)."""

    @property
    def address(self) -> str: ...

    @property
    def settings(self) -> PrometheusSettings: ...

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: float | Literal["default"] | None = "default",
        check_age: bool = True,
    ) -> InstantResult: ...

    async def query_range(
        self,
        promql: str,
        *,
        start_s: float,
        end_s: float,
        step_s: float,
        lookback_delta_s: float | Literal["default"] | None = "default",
        grouped: bool = False,
    ) -> RangeResult: ...


_Value = float | str  # a reading, or the reason there is none


@dataclass
class _Collected:
    values: dict[Quantity, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class PrometheusRackSignalSource:
    """`RackSignalSource` over Prometheus; at most `max_concurrency` queries at a time."""

    def __init__(
        self,
        client: RackQuerier,
        queries: RackSignalQueries | None = None,
        *,
        power: PowerQueryConfig | None = None,
        plausibility: PlausibilityLimits | None = None,
        max_concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._queries = queries if queries is not None else RackSignalQueries()
        self._power = power if power is not None else PowerQueryConfig()
        self._limits = plausibility if plausibility is not None else PlausibilityLimits()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._clock = clock

    @property
    def history_key(self) -> Hashable:
        return ("prometheus", self._client.address, self._queries)

    async def read_racks(self, racks: Sequence[RackNodes]) -> Mapping[str, RackSignals]:
        collected = {r.rack_id: _Collected() for r in racks}
        async with asyncio.TaskGroup() as group:
            tasks = {
                quantity: group.create_task(self._quantity(query, racks))
                for quantity, query in self._queries.by_quantity().items()
                if query is not None
            }
            history = (
                group.create_task(self._history(racks))
                if self._queries.power_query is not None and self._queries.history_window_s > 0
                else None
            )
        nodes = {r.rack_id: len(r.nodes) for r in racks}
        for quantity, task in tasks.items():
            for rack_id, value in task.result().items():
                problem = (
                    value
                    if isinstance(value, str)
                    else self._bounds(quantity, nodes[rack_id]).problem(value)
                )
                if problem is None:
                    collected[rack_id].values[quantity] = float(value)
                elif isinstance(value, str):
                    collected[rack_id].problems.append(f"{quantity}: {problem}")
                else:
                    collected[rack_id].problems.append(f"{quantity}: implausible value: {problem}")
        histories = {
            rack_id: _within(series, self._limits.server_watts(nodes[rack_id]))
            for rack_id, series in (history.result() if history is not None else {}).items()
        }
        out: dict[str, RackSignals] = {}
        for rack in racks:
            got = collected[rack.rack_id]
            v = got.values
            out[rack.rack_id] = RackSignals(
                rack_id=rack.rack_id,
                watts=v.get("watts"),
                inlet_c=v.get("inlet_c"),
                exhaust_c=v.get("exhaust_c"),
                airflow_m3_per_s=v.get("airflow_m3_per_s"),
                cooling_watts=v.get("cooling_watts"),
                supply_c=v.get("supply_c"),
                power_history_w=histories.get(rack.rack_id, ()),
                problems=tuple(got.problems),
            )
        return out

    async def service_power_series(self, namespace: str, pods: Sequence[str]) -> tuple[float, ...]:
        if not pods or self._queries.history_window_s <= 0:
            return ()
        bounds = self._limits.pod_watts(len(pods))
        grouped = build_grouped_power_queries(self._power)
        if grouped is not None:
            return _within(await self._pods_series(grouped, namespace, pods), bounds)
        try:
            query = build_power_query(self._power, namespace, pods)
        except promql.QueryTemplateError:
            return ()
        result = await self._range(query)
        if not isinstance(result, Matrix) or len(result.series) != 1:
            return ()
        return _within(self._on_grid(result.series[0].points), bounds)

    async def _pods_series(
        self, grouped: GroupedPowerQueries, namespace: str, pods: Sequence[str]
    ) -> tuple[float, ...]:
        """The workload's power history from the preset's grouped history, one per step for
        every pod of the server, so every config shares it: the sum of its own pods' CPU
        series at each point (none: a gap), plus their GPU series where Kepler exports them."""
        async with asyncio.TaskGroup() as group:
            cpu_task = group.create_task(self._range(grouped.watts.promql, grouped=True))
            gpu_task = (
                group.create_task(self._range(grouped.gpu_watts.promql, grouped=True))
                if grouped.gpu_watts is not None
                else None
            )
        cpu = self._pods_on_grid(cpu_task.result(), grouped.watts, namespace, pods)
        if cpu is None:
            return ()
        gpu = (
            self._pods_on_grid(gpu_task.result(), grouped.gpu_watts, namespace, pods)
            if gpu_task is not None and grouped.gpu_watts is not None
            else None
        )
        if gpu is None:
            return cpu
        return tuple(c + (0.0 if math.isnan(g) else g) for c, g in zip(cpu, gpu, strict=True))

    def _pods_on_grid(
        self,
        result: RangeResult | None,
        query: GroupedQuery,
        namespace: str,
        pods: Sequence[str],
    ) -> tuple[float, ...] | None:
        if not isinstance(result, Matrix):
            return None
        wanted = set(pods)
        mine = [
            self._on_grid(s.points)
            for s in result.series
            if s.labels.get(query.namespace_label) == namespace
            and s.labels.get(query.pod_label) in wanted
        ]
        if not mine:
            return None
        # Plain sums: math.fsum raises on an overflow that hostile values could cause, where
        # a sum becomes inf and is screened as implausible.
        return tuple(
            math.nan
            if all(math.isnan(v) for v in column)
            else sum(v for v in column if not math.isnan(v))
            for column in zip(*mine, strict=True)
        )

    def _bounds(self, quantity: Quantity, nodes: int) -> PlausibleRange:
        if quantity in ("watts", "cooling_watts"):
            return self._limits.server_watts(nodes)
        if quantity == "airflow_m3_per_s":
            return self._limits.airflow_m3_per_s(nodes)
        return self._limits.temperature_c()

    # -- instant readings -----------------------------------------------------------------

    async def _quantity(self, query: str, racks: Sequence[RackNodes]) -> dict[str, _Value]:
        if is_per_rack(query):
            async with asyncio.TaskGroup() as group:
                tasks = {r.rack_id: group.create_task(self._one(query, r)) for r in racks}
            return {rack_id: task.result() for rack_id, task in tasks.items()}
        return await self._split(query, racks)

    async def _one(self, query: str, rack: RackNodes) -> _Value:
        try:
            built = build_rack_query(query, rack)
        except promql.QueryTemplateError as exc:
            return str(exc)
        try:
            async with self._semaphore:
                result = await self._client.query(built)
        except PrometheusError as exc:
            return str(exc)
        if isinstance(result, NoData):
            return result.message
        if len(result.samples) != 1:
            return f"query {built!r} must return one series per rack, got {len(result.samples)}"
        return result.samples[0].value

    async def _split(self, query: str, racks: Sequence[RackNodes]) -> dict[str, _Value]:
        label = self._queries.rack_label
        try:
            async with self._semaphore:
                result = await self._client.query(query)
        except PrometheusError as exc:
            return {r.rack_id: str(exc) for r in racks}
        if isinstance(result, NoData):
            return {r.rack_id: result.message for r in racks}
        by_rack = _by_label(result, label)
        return {
            r.rack_id: by_rack.get(r.rack_id, f"query {query!r} has no series with {label}=")
            for r in racks
        }

    # -- history ----------------------------------------------------------------------------

    def _grid(self) -> tuple[float, float, float]:
        step = self._queries.history_step_s
        end = math.floor(self._clock() / step) * step
        return end - self._queries.history_window_s, end, step

    def _on_grid(self, points: Sequence[tuple[float, float]]) -> tuple[float, ...]:
        start, end, step = self._grid()
        n = round((end - start) / step) + 1
        values = [math.nan] * n
        for ts, value in points:
            i = round((ts - start) / step)
            if 0 <= i < n:
                values[i] = value
        return tuple(values)

    async def _range(self, query: str, *, grouped: bool = False) -> RangeResult | None:
        start, end, step = self._grid()
        try:
            async with self._semaphore:
                return await self._client.query_range(
                    query, start_s=start, end_s=end, step_s=step, grouped=grouped
                )
        except PrometheusError:
            return None

    async def _history(self, racks: Sequence[RackNodes]) -> dict[str, tuple[float, ...]]:
        query = self._queries.power_query
        assert query is not None
        if is_per_rack(query):

            async def one(rack: RackNodes) -> tuple[float, ...]:
                try:
                    built = build_rack_query(query, rack)
                except promql.QueryTemplateError:
                    return ()
                result = await self._range(built)
                if not isinstance(result, Matrix) or len(result.series) != 1:
                    return ()
                return self._on_grid(result.series[0].points)

            async with asyncio.TaskGroup() as group:
                tasks = {r.rack_id: group.create_task(one(r)) for r in racks}
            return {rack_id: task.result() for rack_id, task in tasks.items()}
        result = await self._range(query)
        if not isinstance(result, Matrix):
            return {}
        label = self._queries.rack_label
        wanted = {r.rack_id for r in racks}
        return {
            s.labels[label]: self._on_grid(s.points)
            for s in result.series
            if s.labels.get(label) in wanted
        }


def _within(series: tuple[float, ...], bounds: PlausibleRange) -> tuple[float, ...]:
    """`series` with the points outside `bounds` missing (NaN), as gaps already are."""
    return tuple(v if bounds.problem(v) is None else math.nan for v in series)


def _by_label(result: Vector, label: str) -> dict[str, _Value]:
    out: dict[str, _Value] = {}
    for sample in result.samples:
        rack_id = sample.labels.get(label)
        if rack_id is None:
            continue
        if rack_id in out:
            out[rack_id] = f"several series with {label}={rack_id!r} (aggregate by {label})"
        else:
            out[rack_id] = sample.value
    return out
