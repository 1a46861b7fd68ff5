"""When a GPU clock sweep pays off, and what an applied clock means for the power-cap learner.

The GPU-tuning reconciler asks `tuning_reason` whether to start a sweep (design doc §10.2.2),
reads an applied result's power change with `watts_scale`, and the power-cap reconciler folds that
change into its learned watts per replica with `rescale_watts_per_replica`, so ceilings reflect
the new clocks at once instead of after relearning. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from climatik.domain.capping import CappingState
from climatik.domain.gpu import ClockSample

TRIGGER_FRACTION = 0.8
"""Tune when measured power reaches this share of the cap (the threshold policy's 80 %)."""
EFFICIENCY_SHIFT = 0.15
"""Tune again when tokens per watt moved this much since the last tuning."""


@dataclass(frozen=True, slots=True)
class TriggerInputs:
    """What decides whether tuning is worth a sweep now."""

    measured_w: float | None
    cap_w: float
    rack_near_limit: bool
    tokens_per_watt: float | None
    tokens_per_watt_at_last_tuning: float | None


def tuning_reason(inputs: TriggerInputs) -> str | None:
    """Why to tune now (design doc §10.2.2), or None when nothing calls for it."""
    if inputs.measured_w is not None and inputs.measured_w >= TRIGGER_FRACTION * inputs.cap_w:
        share = inputs.measured_w / inputs.cap_w
        return f"power at {share:.0%} of the cap"
    if inputs.rack_near_limit:
        return "a rack is near its power or temperature limit"
    before, now = inputs.tokens_per_watt_at_last_tuning, inputs.tokens_per_watt
    if before and now is not None and abs(now / before - 1.0) >= EFFICIENCY_SHIFT:
        return f"tokens per watt moved {now / before - 1.0:+.0%} since the last tuning"
    return None


def watts_scale(result: Mapping[str, Any]) -> float | None:
    """Power at the chosen clock relative to before, from a `gpu-tune` result document."""
    choice = result.get("choice") or {}
    before = (choice.get("before") or {}).get("watts")
    after = (choice.get("after") or {}).get("watts")
    if not isinstance(before, int | float) or not isinstance(after, int | float) or before <= 0:
        return None
    if result.get("mode") != "apply" or result.get("appliedClockMHz") is None:
        return None  # a recommendation changes nothing on the node
    return float(after) / float(before)


def target_watts_scales(
    node_scales: Mapping[str, float], target_nodes: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Per target, how much its average replica's power changed when the nodes in
    `node_scales` applied a clock: each of its replicas on such a node draws that node's scale,
    the others as before. `target_nodes` lists each target's replicas' nodes ('' unscheduled);
    targets with no replica on a retuned node are left out.

    A tuning result belongs to one node, not to the config: applied to every target, eight
    nodes' results taken over two reconciles cut a target's learned watts to two thirds of
    what its replicas drew (the demo's first tuned run)."""
    scales: dict[str, float] = {}
    for target, nodes in target_nodes.items():
        placed = [n for n in nodes if n]
        if any(n in node_scales for n in placed):
            scales[target] = sum(node_scales.get(n, 1.0) for n in placed) / len(placed)
    return scales


def rescale_watts_per_replica(state: CappingState, scales: Mapping[str, float]) -> CappingState:
    """The learner's state with each named target's per-replica estimate multiplied by its
    scale (`target_watts_scales`); other targets keep theirs."""
    targets = {
        name: replace(
            learned,
            watts_per_replica=(
                learned.watts_per_replica * scales[name]
                if learned.watts_per_replica is not None and name in scales
                else learned.watts_per_replica
            ),
        )
        for name, learned in state.targets.items()
    }
    return replace(state, targets=targets)


def sweep_of(result: Mapping[str, Any]) -> tuple[tuple[ClockSample, ...], int] | None:
    """A result document's sweep (its samples, fastest first) and the clock it chose; `None`
    for a result without both (a lock, a dry run, a failed sweep)."""
    choice = result.get("choice") or {}
    tuned = choice.get("clockMHz") if isinstance(choice, Mapping) else None
    samples = []
    for raw in result.get("samples") or ():
        if not isinstance(raw, Mapping):
            return None
        clock, watts, tokens = raw.get("clockMHz"), raw.get("watts"), raw.get("tokensPerSecond")
        latency = raw.get("p99TokenLatencySeconds")
        if not (
            isinstance(clock, int)
            and isinstance(watts, int | float)
            and isinstance(tokens, int | float)
            and (latency is None or isinstance(latency, int | float))
        ):
            return None
        samples.append(
            ClockSample(
                clock_mhz=clock,
                watts=float(watts),
                tokens_per_s=float(tokens),
                p99_token_latency_s=None if latency is None else float(latency),
            )
        )
    if not isinstance(tuned, int) or all(s.clock_mhz != tuned for s in samples):
        return None
    return tuple(sorted(samples, key=lambda s: s.clock_mhz, reverse=True)), tuned


def clock_after(result: Mapping[str, Any], before: int | None) -> int | None:
    """The node's locked clock after a result (`None`: the GPUs' default): an applied or
    locked clock stays; a recommendation, or a sweep that failed, restored the default; a dry
    run, or a lock that failed, leaves what was there (`before`)."""
    applied = result.get("appliedClockMHz")
    mode = result.get("mode")
    if isinstance(applied, int) and mode in {"apply", "lock"}:
        return applied
    if mode in {"lock", "dry-run"}:
        return before
    return None
