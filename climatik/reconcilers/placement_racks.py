"""What placement knows about racks this round: one `RackView` per rack of a config.

Nodes are grouped into racks (and cooling zones) by their labels; each rack's power, inlet and
supply air come from a `RackSignalSource`; its heat recirculation (factor and heat-matrix column)
from the recirculation ConfigMap, read from an informer's cache, or lacking one estimated by
least squares from the rack history, which every config reading the same racks shares.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from climatik.domain.config import PowerCappingConfig
from climatik.domain.placement import PlaceObservation, RecirculationEstimate
from climatik.kube.cache import Cache
from climatik.kube.json import ObjectMeta, child, strings
from climatik.kube.json import text as text_at
from climatik.kube.store import FrozenMapping
from climatik.policies.heat_fit import PlacePosition
from climatik.policies.observations import (
    PlaceReading,
    group_nodes_by_rack,
    heat_coefficients,
    observe_places,
    recirculation_from_history,
    refit_due,
    zone_watts,
)
from climatik.reconcilers.settings import PlacementSettings
from climatik.sources.racks import RackNodes, RackSignals, RackSignalSource
from climatik.sources.recirculation import (
    COLUMN_FIELD,
    FACTOR_FIELD,
    RECIRCULATION_KEY,
    RackCoefficients,
    key_names,
    parse_recirculation,
)

_ParseKey = tuple[str, tuple[str, ...]]
"""A `racks.yaml` text and the sorted rack ids it was checked against."""
_Parsed = tuple[Mapping[str, RackCoefficients], Sequence[str]]
"""What `parse_recirculation` made of it: usable coefficients and the problems found."""


_SAMPLE_GAP = 0.5
"""A shared rack history takes a sample once per half interval at most (configs reconcile at
scattered moments; a sample per config would sample far faster than the interval)."""

_MAX_PROBLEMS = 6
"""Problems named in one Event or condition message; the rest are counted."""
MAX_PROBLEM_CHARS = 1500
"""The named problems are cut to this, so the whole text fits the condition message."""


@dataclass(frozen=True, slots=True)
class RackView:
    """A rack as the reconciler sees it this round."""

    rack_id: str
    nodes: tuple[str, ...]
    zone: str
    signals: RackSignals
    observation: PlaceObservation


Layout = tuple[PlacePosition, ...] | None
"""Every rack's place along the row (height 0.5: a rack is one place), or None: not all known."""


@dataclass
class RackHistory:
    """Complete rack readings (power and inlet of every rack) for the recirculation estimate,
    one sample per interval, shared by every config that reads the same racks the same way:
    racks are physical, so thousands of configs must not each keep (and fit) their own copy."""

    samples: deque[tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...] | None]]
    """(rack watts, rack inlets, the supply air reaching each rack or `None` unmeasured)."""
    last_sample_s: float | None = None
    appended: int = 0
    """Samples ever appended, so an estimate is refitted after `HEAT_REFIT_SAMPLES` new ones."""
    estimates: dict[Layout, tuple[int, RecirculationEstimate | None]] = field(default_factory=dict)
    """Per row layout the fit was drawn toward (configs in different namespaces may give their
    racks' layout or not): the samples appended at the fit, and the fit."""


@dataclass
class RecirculationMemory:
    """What is remembered about one config's recirculation ConfigMap between reconciles."""

    problem: str = ""
    """What is wrong with the ConfigMap this round, in words ("" when nothing)."""
    parsed: tuple[_ParseKey, _Parsed] | None = None
    """The last `racks.yaml` parsed (with the racks it was checked against) and its result."""


class RackObserver:
    """Builds a config's `RackView`s; keeps what configs share (node grouping, rack histories)."""

    def __init__(
        self,
        *,
        nodes: Cache[FrozenMapping],
        recirculation_maps: Cache[FrozenMapping],
        settings: PlacementSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nodes = nodes
        self._recirculation_maps = recirculation_maps
        self._settings = settings
        self._clock = clock
        self.histories: dict[tuple[Hashable, tuple[str, ...]], RackHistory] = {}
        """Rack histories by (source's history key, rack ids): one per set of physical racks."""
        self._node_racks: (
            tuple[tuple[str, int], tuple[Mapping[str, tuple[str, ...]], Mapping[str, str]]] | None
        ) = None

    async def observe(
        self, config: PowerCappingConfig, source: RackSignalSource, memory: RecirculationMemory
    ) -> list[RackView]:
        """The config's racks (labelled nodes and `rackConstraints`), read, scored for heat."""
        found_nodes, zone_of_rack = self._racks_of_nodes(config.placement.rack_label_key)
        nodes_by_rack = {rack: list(nodes) for rack, nodes in found_nodes.items()}
        for constraint in config.racks:
            nodes_by_rack.setdefault(constraint.rack_id, [])
        rack_ids = sorted(nodes_by_rack)
        if not rack_ids:
            return []
        signals = await source.read_racks(
            [RackNodes(r, tuple(sorted(nodes_by_rack[r]))) for r in rack_ids]
        )
        coefficients = await self._recirculation(config, rack_ids, memory)
        history = self._history(source, rack_ids)
        hrf, columns = self._hrf(rack_ids, signals, coefficients, history)
        none = RackCoefficients()
        zones = {r: coefficients.get(r, none).zone or zone_of_rack.get(r) or r for r in rack_ids}
        readings = []
        for r in rack_ids:
            limits = config.rack(r)
            readings.append(
                PlaceReading(
                    place_id=r,
                    watts=finite(signals[r].watts),
                    inlet_c=finite(signals[r].inlet_c),
                    max_inlet_c=(
                        limits.max_temperature_celsius
                        if limits is not None and limits.max_temperature_celsius is not None
                        else config.cooling.redline_celsius
                    ),
                    max_watts=limits.max_power_w if limits is not None else None,
                    zone=zones[r],
                    supply_c=finite(signals[r].supply_c),
                    load_series_w=signals[r].power_history_w,
                )
            )
        observations = observe_places(
            readings,
            factors=hrf,
            columns=columns,
            zone_w=zone_watts((zones[r], finite(signals[r].watts)) for r in rack_ids),
        )
        return [
            RackView(r, tuple(nodes_by_rack[r]), zones[r], signals[r], observation)
            for r, observation in zip(rack_ids, observations, strict=True)
        ]

    async def _recirculation(
        self, config: PowerCappingConfig, rack_ids: Collection[str], memory: RecirculationMemory
    ) -> dict[str, RackCoefficients]:
        """The ConfigMap's usable coefficients; what is wrong, in `memory.problem`.

        Read from the informer's cache (the controller watches ConfigMaps of this one name, by
        name), never by a GET per reconcile. Absent is not a problem: the estimate from history
        is the documented default."""
        name = self._settings.recirculation_config_map
        where = f"ConfigMap {config.namespace}/{name}"
        problems: list[str] = []
        cm = self._recirculation_maps.store.get(f"{config.namespace}/{name}")
        if cm is None:
            memory.problem = ""
            return {}
        data = child(cm, "data")
        text = text_at(data, RECIRCULATION_KEY)
        if text is None:
            problems.append(
                f"has no key {RECIRCULATION_KEY} (keys: {key_names(data)}); "
                "recirculation is estimated from power and inlet history instead"
            )
        coefficients: dict[str, RackCoefficients] = {}
        if text:
            coefficients, bad = await self._parse_recirculation(text, rack_ids, memory)
            problems.extend(f"{RECIRCULATION_KEY}: {p}" for p in bad)
        if problems:
            shown = problems[:_MAX_PROBLEMS]
            if len(problems) > len(shown):
                shown.append(f"and {len(problems) - len(shown)} more")
            listed = "; ".join(shown)
            if len(listed) > MAX_PROBLEM_CHARS:
                listed = listed[: MAX_PROBLEM_CHARS - 3] + "..."
            memory.problem = (
                f"{where}: {listed}. Racks without a usable {FACTOR_FIELD} or {COLUMN_FIELD} use "
                "the estimate from power and inlet history (no recirculation term until there is "
                "enough)"
            )
        else:
            memory.problem = ""
        return coefficients

    async def _parse_recirculation(
        self, text: str, rack_ids: Collection[str], memory: RecirculationMemory
    ) -> tuple[dict[str, RackCoefficients], list[str]]:
        """`parse_recirculation` in a worker thread, once per distinct text and set of racks.

        Parsing up to `MAX_RECIRCULATION_BYTES` of YAML takes a while; on the event loop it
        would delay the lease renewal and every other reconcile. Most rounds read the same
        ConfigMap, so the last result is kept (a string compare, not a parse)."""
        key = (text, tuple(sorted(rack_ids)))
        cached = memory.parsed
        if cached is not None and cached[0] == key:
            coefficients, problems = cached[1]
        else:
            coefficients, problems = await asyncio.to_thread(parse_recirculation, text, key[1])
            memory.parsed = (key, (coefficients, problems))
        return dict(coefficients), list(problems)

    def _racks_of_nodes(
        self, label: str
    ) -> tuple[Mapping[str, tuple[str, ...]], Mapping[str, str]]:
        """Nodes by rack, and each rack's zone, from the node labels: kept until a node
        changes (every config of a cluster asks the same, every interval)."""
        key = (label, self._nodes.store.version)
        if self._node_racks is not None and self._node_racks[0] == key:
            return self._node_racks[1]
        grouping = group_nodes_by_rack(
            (
                (str(ObjectMeta.of(node).name), strings(ObjectMeta.of(node).raw, "labels"))
                for node in self._nodes.store.objects()
            ),
            label,
            self._settings.zone_label_key,
        )
        found = (grouping.nodes_by_rack, grouping.zone_of_rack)
        self._node_racks = (key, found)
        return found

    def _hrf(
        self,
        rack_ids: Sequence[str],
        signals: Mapping[str, RackSignals],
        coefficients: Mapping[str, RackCoefficients],
        history: RackHistory,
    ) -> tuple[dict[str, float], dict[str, tuple[tuple[str, float], ...]]]:
        """Recirculation factor and heat-matrix column per rack: configured, else estimated."""
        configured: dict[str, float] = {}
        columns: dict[str, tuple[tuple[str, float], ...]] = {}
        for r in rack_ids:
            entry = coefficients.get(r)
            if entry is None:
                continue
            if entry.factor_c_per_kw is not None:
                configured[r] = entry.factor_c_per_kw
            if entry.column:
                columns[r] = entry.column
        # Remember complete readings for the estimate (racks with power and inlet).
        watts = [finite(signals[r].watts) for r in rack_ids]
        inlets = [finite(signals[r].inlet_c) for r in rack_ids]
        supplies = [finite(signals[r].supply_c) for r in rack_ids]
        now_s = self._clock()
        due = (
            history.last_sample_s is None
            or now_s - history.last_sample_s >= _SAMPLE_GAP * self._settings.interval_s
        )
        if due and history.samples.maxlen and all(v is not None for v in (*watts, *inlets)):
            history.samples.append(
                (
                    tuple(w or 0.0 for w in watts),
                    tuple(t or 0.0 for t in inlets),
                    tuple(s for s in supplies if s is not None)
                    if all(s is not None for s in supplies)
                    else None,
                )
            )
            history.last_sample_s = now_s
            history.appended += 1
        if len(configured) == len(rack_ids) and len(columns) == len(rack_ids):
            return configured, columns
        layout = _layout(rack_ids, coefficients)
        estimate = self._estimate(rack_ids, history, self._settings.interval_s, layout)
        return heat_coefficients(rack_ids, estimate, configured, columns)

    def _history(self, source: RackSignalSource, rack_ids: Sequence[str]) -> RackHistory:
        """The shared history of these racks read from this source (new when either is)."""
        key = (source.history_key, tuple(rack_ids))
        history = self.histories.get(key)
        if history is None or history.samples.maxlen != self._settings.history_samples:
            history = self.histories[key] = RackHistory(
                deque(maxlen=self._settings.history_samples)
            )
        return history

    @staticmethod
    def _estimate(
        rack_ids: Sequence[str], history: RackHistory, interval_s: float, layout: Layout = None
    ) -> RecirculationEstimate | None:
        """The recirculation fitted to the history, refitted every `HEAT_REFIT_SAMPLES` samples
        (samples about one interval apart, so the fit can find the inlets' lag), one per row
        layout; with a layout, drawn toward the geometric prior."""
        fitted = history.estimates.get(layout)
        if fitted is not None and not refit_due(fitted[0], history.appended):
            return fitted[1]
        estimate = recirculation_from_history(
            rack_ids,
            [h[0] for h in history.samples],
            [h[1] for h in history.samples],
            [h[2] for h in history.samples],
            sample_s=interval_s,
            positions=layout,
        )
        history.estimates[layout] = (history.appended, estimate)
        return estimate


def _layout(rack_ids: Sequence[str], coefficients: Mapping[str, RackCoefficients]) -> Layout:
    """The racks' places along the row from the ConfigMap's `rowPosition`s, when it gives
    every rack's (a prior over some racks only would weigh distances it does not know)."""
    positions = [coefficients[r].position for r in rack_ids if r in coefficients]
    placed = tuple(PlacePosition(rack=p, height=0.5) for p in positions if p is not None)
    return placed if len(placed) == len(rack_ids) else None


def finite(value: float | None) -> float | None:
    """`value`, or None when it is missing or not a finite number."""
    return value if value is not None and math.isfinite(value) else None
