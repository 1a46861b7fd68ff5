"""`climatik explain`: a PowerCappingConfig's last decision, its inputs and why, in plain words.

Pure rendering of what the controller wrote in the status, so the explanation is exactly what
the controller knew, not a second guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from climatik.api.status import status_from_wire
from climatik.api.status_models import ReplicaFootprintStatus, ReplicaSizeStatus

_SIZE_REASONS = {
    "Keep": "keep it",
    "Efficiency": "for more tokens per joule",
    "Slo": "to meet the SLO",
    "Fragmented": "replicas are Pending and no node has that many GPUs free",
    "Unmeasured": "no load measured yet",
}


def _share(share: float) -> str:
    """A share in percent with as few decimals as keep it apart from 100 % (goals like 99.99 %
    are common; rounding 99.97 % up to "100%" would hide that it misses one)."""
    for decimals in range(4):
        text = f"{share:.{decimals}%}"
        if share >= 1.0 or text != f"{1.0:.{decimals}%}":
            return text
    return f"{share:.4%}"


def _prediction(tokens_per_joule: float | None, slo: float | None) -> str:
    if tokens_per_joule is None or slo is None:
        return ""
    return f" ({tokens_per_joule:.3f} tokens/J, {_share(slo)} within SLO)"


def _replica_size_line(size: ReplicaSizeStatus) -> str:
    """GPUs per replica now and recommended, with their predictions and the reason."""
    now = _prediction(size.current_tokens_per_joule, size.current_slo_attainment)
    line = f"GPUs per replica of {size.name}: {size.current_gpus}{now}"
    if size.recommended_gpus is None or size.recommended_gpus == size.current_gpus:
        return f"{line}; {_SIZE_REASONS.get(size.reason, size.reason)}."
    then = _prediction(size.recommended_tokens_per_joule, size.recommended_slo_attainment)
    why = _SIZE_REASONS.get(size.reason, size.reason)
    return f"{line}; recommended {size.recommended_gpus}{then}, {why}."


def _resources(cpu_cores: float | None, memory_bytes: float | None) -> str:
    parts = []
    if cpu_cores is not None:
        parts.append(f"{cpu_cores:.3g} CPU")
    if memory_bytes is not None:
        parts.append(f"{memory_bytes / 2**20:.0f} MiB")
    return ", ".join(parts) or "nothing"


def _footprint_line(footprint: ReplicaFootprintStatus) -> str:
    """One replica's CPU and memory as VPA admits it, and the seats left per rack."""
    source = (
        f"VPA {footprint.vertical_pod_autoscaler}'s target"
        if footprint.source == "VpaTarget"
        else f"its pods' requests; VPA {footprint.vertical_pod_autoscaler} applies none"
    )
    line = (
        f"One replica of {footprint.name}: "
        f"{_resources(footprint.cpu_cores, footprint.memory_bytes)} ({source}"
    )
    if footprint.source == "VpaTarget":
        asked = _resources(footprint.requested_cpu_cores, footprint.requested_memory_bytes)
        line += f"; its pods ask {asked} now"
    seats = ", ".join(f"{s.replicas} on {s.rack_id}" for s in footprint.seats or ())
    line += f"); replicas that still fit: {seats}" if seats else "); no rack's nodes are known"
    return line + ". Its watts are the power model's."


def explain(obj: Mapping[str, Any]) -> str:
    """Plain-language account of one PowerCappingConfig object."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
    status = status_from_wire(obj)
    lines = [f"PowerCappingConfig {name}"]
    cap = spec.get("powerCapLimit")
    policy = (spec.get("policy") or {}).get("type", "Headroom")
    lines.append(f"  Cap: {cap} W (powerCapLimit), policy {policy}.")
    if status is None:
        lines.append("  The controller has not reported on this config yet.")
        return "\n".join(lines) + "\n"
    generation = meta.get("generation")
    if status.observed_generation is not None and status.observed_generation != generation:
        lines.append(
            f"  Note: the status describes generation {status.observed_generation}; the spec is "
            f"at {generation} and has not been acted on yet."
        )
    if status.effective_cap_watts is not None:
        source = status.effective_cap_source or "Static"
        why = "lowered for grid carbon" if str(source) == "Carbon" else "the static limit"
        lines.append(f"  Cap in force: {status.effective_cap_watts:.0f} W ({why}).")
    if status.measured_power_watts is not None and status.effective_cap_watts:
        share = status.measured_power_watts / status.effective_cap_watts
        lines.append(
            f"  Measured power: {status.measured_power_watts:.0f} W, {share:.0%} of the cap."
        )
    else:
        lines.append("  Measured power: unknown (no usable reading).")
    if status.last_decision is not None:
        decision = status.last_decision
        lines.append(
            f"  Last decision ({decision.time:%Y-%m-%d %H:%M:%S} UTC): {decision.action}. "
            f"{decision.reason}"
        )
    else:
        lines.append("  Last decision: none yet (every ceiling is where the user set it).")
    for target in status.targets or ():
        ceiling = target.applied_max_replicas
        user = target.user_max_replicas
        held = "" if ceiling == user else f" (the user's own maximum is {user})"
        per_replica = (
            f", about {target.watts_per_replica:.0f} W per replica"
            if target.watts_per_replica
            else ""
        )
        efficiency = (
            f", {target.tokens_per_watt:.2f} tokens/s per W" if target.tokens_per_watt else ""
        )
        lines.append(
            f"  {target.kind} {target.name}: {target.current_replicas} running, ceiling "
            f"{ceiling}{held}{per_replica}{efficiency}."
        )
    for rack in status.racks or ():
        parts = [f"rack {rack.rack_id}:"]
        if rack.power_watts is not None:
            parts.append(f"{rack.power_watts:.0f} W")
        if rack.headroom_watts is not None:
            parts.append(f"({rack.headroom_watts:.0f} W headroom)")
        if rack.inlet_celsius is not None:
            parts.append(f"inlet {rack.inlet_celsius:.1f} °C")
        lines.append("  " + " ".join(parts))
    lines.extend("  " + _replica_size_line(size) for size in status.replica_sizes or ())
    lines.extend("  " + _footprint_line(f) for f in status.replica_footprints or ())
    for condition in status.conditions or ():
        mark = {"True": "yes", "False": "no"}.get(str(condition.status), "unknown")
        lines.append(f"  {condition.type}: {mark} ({condition.reason}) {condition.message}")
    return "\n".join(lines) + "\n"
