"""What placement reports: the RacksWithinLimits condition's text and the per-rack gauges.

Pure functions of this round's racks and scores; the reconciler writes the condition (with the
object's resourceVersion) and sends the Events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from climatik.api.status import find_condition, status_from_wire
from climatik.api.status_models import ConditionStatus, ConditionType
from climatik.domain.config import PowerCappingConfig
from climatik.domain.placement import PlaceScore, SupplySetpoint
from climatik.kube.json import JsonObject
from climatik.reconcilers.placement_metrics import PlacementMetrics
from climatik.reconcilers.placement_racks import RackView

MAX_MESSAGE_CHARS = 4000
"""A condition message is cut to this (the rack list first, the ConfigMap problem never)."""


@dataclass(frozen=True, slots=True)
class RacksCondition:
    """The RacksWithinLimits condition of one round, and the racks over a limit."""

    status: ConditionStatus
    reason: str
    message: str
    over: frozenset[str]


def racks_condition(
    config: PowerCappingConfig,
    racks: Sequence[RackView],
    rack_scores: Sequence[PlaceScore],
    problem: str,
) -> RacksCondition:
    """The condition for these racks; `problem` (in words, "" for none) is always kept whole."""
    by_id = {r.rack_id: r for r in racks}
    over = frozenset(s.place_id for s in rack_scores if not s.admissible)
    lines = [rack_line(by_id[s.place_id], s) for s in rack_scores[:16]]
    measured = any(
        r.observation.inlet_c is not None or r.observation.watts is not None for r in racks
    )
    if not racks or not measured:
        status, reason = ConditionStatus.UNKNOWN, "NoRackData"
        problems = [p for r in racks for p in r.signals.problems][:3]
        message = (
            "no rack readings: " + "; ".join(problems)
            if problems
            else f"no nodes carry the rack label {config.placement.rack_label_key!r}"
            if not racks
            else "no rack readings"
        )
    elif over:
        status, reason = ConditionStatus.FALSE, "RackOverLimit"
        message = f"over a limit: {', '.join(sorted(over))}. " + "; ".join(lines)
    else:
        status, reason = ConditionStatus.TRUE, "WithinLimits"
        message = "; ".join(lines)
    if problem:
        # The condition is where an operator looks first; the Event alone would age out. A
        # hot room's rack list is long: it is cut, never the problems (the recirculation one
        # at most MAX_PROBLEM_CHARS of placement_racks plus a fixed text, the deletion-cost one
        # a fixed text, so they always fit).
        room = MAX_MESSAGE_CHARS - len(problem) - 2
        if len(message) > room:
            message = message[: max(0, room - 3)] + "..."
        message = f"{message}. {problem}"
    return RacksCondition(status, reason, message[:MAX_MESSAGE_CHARS], over)


def report_metrics(
    m: PlacementMetrics,
    config: PowerCappingConfig,
    racks: Sequence[RackView],
    rack_scores: Sequence[PlaceScore],
    setpoints: Sequence[SupplySetpoint],
    *,
    recirculation_ok: bool,
    deletion_costs_allowed: bool | None,
) -> None:
    """One round of the config's `climatik_rack_*` and placement gauges; racks gone are dropped.

    `deletion_costs_allowed` is None when placement is off (no such gauge then)."""
    key = config.key
    m.begin_round(key)
    m.set_gauge(m.recirculation_config_ok, 1.0 if recirculation_ok else 0.0, key)
    if deletion_costs_allowed is not None:
        m.set_gauge(m.deletion_costs_allowed, 1.0 if deletion_costs_allowed else 0.0, key)
    for s in rack_scores:
        m.set_gauge(m.rack_score, s.score, key, s.place_id)
    admissible = {s.place_id: s.admissible for s in rack_scores}
    for r in racks:
        o = r.observation
        m.set_gauge(m.rack_admissible, 1.0 if admissible[r.rack_id] else 0.0, key, r.rack_id)
        if o.inlet_c is not None:
            m.set_gauge(m.rack_inlet, o.inlet_c, key, r.rack_id)
        if o.watts is not None:
            m.set_gauge(m.rack_power, o.watts, key, r.rack_id)
        if o.thermal_headroom_c is not None:
            m.set_gauge(m.rack_thermal_headroom, o.thermal_headroom_c, key, r.rack_id)
        if o.power_headroom_w is not None:
            m.set_gauge(m.rack_power_headroom, o.power_headroom_w, key, r.rack_id)
    for sp in setpoints:
        m.set_gauge(m.supply_change, sp.change_c, key, sp.group)
        if sp.supply_c is not None:
            m.set_gauge(m.supply_setpoint, sp.supply_c, key, sp.group)
    m.end_round(key)


def condition_names(obj: JsonObject, problem: str) -> bool:
    """Whether the object's RacksWithinLimits condition already names `problem`."""
    try:
        status = status_from_wire(obj)
    except ValueError:  # a status this version cannot read: report rather than stay silent
        return False
    found = find_condition(
        status.conditions if status else None, str(ConditionType.RACKS_WITHIN_LIMITS)
    )
    return found is not None and problem in (found.message or "")


def rack_line(rack: RackView, score: PlaceScore | None) -> str:
    """One rack in a few words: score, power, inlet and headroom, each when known."""
    o = rack.observation
    parts = [rack.rack_id]
    if score is not None:
        parts.append(f"score {score.score:.2f}")
    if o.watts is not None:
        parts.append(f"{o.watts / 1000.0:.1f} kW")
    if o.inlet_c is not None:
        parts.append(f"inlet {o.inlet_c:.1f} °C")
    if o.thermal_headroom_c is not None:
        parts.append(f"{o.thermal_headroom_c:.1f} °C headroom")
    if o.power_headroom_w is not None:
        parts.append(f"{o.power_headroom_w / 1000.0:.1f} kW headroom")
    return " ".join(parts)
