"""The policies the twin compares, by name: the one list `--policies` and scenario files accept.

Kept apart from the engine so the scenario schema can validate `policies:` against the same
names without importing the time loop (which imports the scenario schema).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """How one compared policy caps, places, and uses carbon and clocks."""

    ceilings: str  # uncapped | static | threshold | headroom
    placement: str  # round-robin | random | minhr | zone | climatik
    carbon: bool = False
    tuned_clocks: bool = False
    remove_hottest: bool = False
    """Scale-in by Climatik's pod-deletion-cost rule (`score_scale_in`: the replica whose
    removal lowers the hottest inlet most first), not the ReplicaSet's newest-first."""
    joint_clocks: bool = False
    """Clocks decided with the replicas under a binding cap (`clocks_under_cap`, as POLCA), a
    target's at most every `CLOCK_CHANGE_INTERVAL_S`: the live controller's
    `gpuTuning.clocksUnderCap` (opt-in; each change is a lock Job per node), so `climatik`
    leaves it off and `climatik-joint-clocks` shows what it buys."""
    migrate: bool = False
    """Move a ready replica to a cooler place when the heat matrix predicts the move lowers the
    hottest inlet (`choose_migration`), as `spec.placement.migration` asks of the live
    controller; off by default there (an eviction costs the replica's start-up), so `climatik`
    leaves it off and `climatik-migrate` shows what it buys."""


POLICY_SPECS: dict[str, PolicySpec] = {
    "uncapped": PolicySpec("uncapped", "round-robin"),
    "static": PolicySpec("static", "round-robin"),
    "seed-threshold": PolicySpec("threshold", "round-robin"),
    "climatik": PolicySpec("headroom", "climatik", True, True, True),
    # Headroom ceilings alone (no carbon, maximum clocks, the ReplicaSet's scale-in): what
    # `climatik demo`'s PowerCappingConfig asks of the live controller.
    "headroom": PolicySpec("headroom", "round-robin"),
    # The same with every service at its tuned clock: what `climatik demo --gpu-tuning Apply`
    # asks of the live controller (whose tuning Jobs lock the clocks node by node).
    "headroom-tuned": PolicySpec("headroom", "round-robin", tuned_clocks=True),
    # ... and with the clocks moved with the replicas under the cap: what `climatik demo
    # --gpu-tuning Apply --clocks-under-cap` asks of it.
    "headroom-joint-clocks": PolicySpec(
        "headroom", "round-robin", tuned_clocks=True, joint_clocks=True
    ),
    # Ablations: climatik with one input removed, to show what that input is worth.
    "climatik-no-carbon": PolicySpec("headroom", "climatik", False, True, True),
    "climatik-max-clock": PolicySpec("headroom", "climatik", True, False, True),
    # What moving running replicas to cooler places adds (`spec.placement.migration`, opt-in).
    "climatik-migrate": PolicySpec("headroom", "climatik", True, True, True, migrate=True),
    # What deciding clocks with the replicas adds (`gpuTuning.clocksUnderCap`, opt-in).
    "climatik-joint-clocks": PolicySpec(
        "headroom", "climatik", True, True, True, joint_clocks=True
    ),
    # `climatik`'s ceilings, carbon and clocks with another placement, so placement is
    # measured on its own.
    "placement-random": PolicySpec("headroom", "random", True, True),
    "placement-round-robin": PolicySpec("headroom", "round-robin", True, True),
    "placement-minhr": PolicySpec("headroom", "minhr", True, True),
    "placement-zone": PolicySpec("headroom", "zone", True, True),
}
"""Every policy the twin knows, in the order `--list` shows them."""

POLICY_NAMES: tuple[str, ...] = tuple(POLICY_SPECS)

DEFAULT_POLICIES: tuple[str, ...] = ("uncapped", "static", "seed-threshold", "climatik")
"""What a scenario compares when it names no policies: the baselines and climatik."""
