"""GPU clocks on the twin: the tuning Job's sweep measured on the twin, the clock each policy
starts at, and the clocks decided with the replicas under a cap.

The tuning and joint decisions are the controller's own functions (`choose_gpu_clock`,
`clocks_under_cap`); this module only feeds them what the twin measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from climatik.domain.capping import CappingState
from climatik.domain.gpu import ClockSample
from climatik.policies.ceiling_settings import HeadroomSettings
from climatik.policies.clock_round import dynamic_budget_w, spare_w
from climatik.policies.gpu_clock import (
    ClockBounds,
    ClockTarget,
    choose_gpu_clock,
    clock_change_ratios,
    clocks_under_cap,
)
from climatik.policies.power_model import rescale_for_clock
from climatik.sim import physics
from climatik.sim.policy_specs import PolicySpec
from climatik.sim.scenario import Scenario, Service

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def clock_sweeps(scenario: Scenario) -> list[list[ClockSample]]:
    """Per service, the GPU-tuning Job's samples measured on the twin: one replica at full
    batch at every clock of the sweep, a little noisy like real measurements."""
    gpu = scenario.racks.gpu_curve
    rng = np.random.default_rng(scenario.seed + 101)
    clocks = physics.clock_sweep_mhz(gpu)
    return [
        [noisy(sample_at_clock(scenario, service, float(clock)), rng) for clock in clocks]
        for service in scenario.services
    ]


def sample_at_clock(scenario: Scenario, service: Service, clock_mhz: float) -> ClockSample:
    """What a tuning sweep measures on one of the twin's servers serving `service` at a locked
    clock: a replica's tokens per second, the server's watts and the time between tokens."""
    racks = scenario.racks
    gpu = racks.gpu_curve
    model = service.model_class
    ratio = clock_mhz / gpu.max_clock_mhz
    pre, dec = physics.request_busy_s(model, service.prompt_tokens, service.output_tokens, ratio)
    busy = float(pre + dec)
    gpu_w = physics.gpu_power_w(ratio, float(pre) / busy, float(dec) / busy, gpu)
    watts = physics.server_power_w(
        gpu_w, racks.gpus_per_server, gpu.idle_w, racks.server_base_w, racks.server_gpu_overhead
    )
    return ClockSample(
        clock_mhz=round(clock_mhz),
        tokens_per_s=service.output_tokens / busy,
        watts=float(watts),
        p99_token_latency_s=float(physics.decode_step_s(model, 1.0, ratio)),
    )


def noisy(sample: ClockSample, rng: np.random.Generator) -> ClockSample:
    """The sample as a real measurement reads it: tokens and watts off by about 1 %."""
    return ClockSample(
        clock_mhz=sample.clock_mhz,
        tokens_per_s=sample.tokens_per_s * (1 + rng.normal(0, 0.01)),
        watts=sample.watts * (1 + rng.normal(0, 0.01)),
        p99_token_latency_s=sample.p99_token_latency_s,
    )


def clock_bounds(scenario: Scenario) -> list[ClockBounds]:
    """Per service, the SLO bounds a clock must respect: p99 token latency within 0.8 x its
    time-between-tokens objective."""
    return [ClockBounds(max_p99_token_latency_s=0.8 * s.slo.tbt_s) for s in scenario.services]


def tuned_clock_ratios(scenario: Scenario) -> tuple[list[float], list[str]]:
    """Per service, the clock `choose_gpu_clock` picks from a sweep measured on the twin."""
    gpu = scenario.racks.gpu_curve
    ratios: list[float] = []
    reasons: list[str] = []
    for service, samples, limits in zip(
        scenario.services, clock_sweeps(scenario), clock_bounds(scenario), strict=True
    ):
        choice = choose_gpu_clock(samples, limits)
        ratios.append(choice.clock_mhz / gpu.max_clock_mhz)
        reasons.append(f"{service.name}: {choice.reason}")
    return ratios, reasons


def per_replica_slowdown(
    scenario: Scenario, clock_ratios: list[float]
) -> dict[str, dict[str, float]]:
    """What each service's tuned clock costs one replica against the maximum clock.

    `decode_tokens_per_s` is SIMULATOR.md's replica throughput (B / t_dec at full batch);
    `requests_per_s` also counts prefill, which slows with 1/f. Under a binding cap the watts
    saved buy more replicas, so the service's own throughput can rise while each replica slows.
    """
    out: dict[str, dict[str, float]] = {}
    for service, ratio in zip(scenario.services, clock_ratios, strict=True):
        model = service.model_class
        decode = float(
            physics.decode_step_s(model, 1.0, 1.0) / physics.decode_step_s(model, 1.0, ratio)
        )
        fast = sum(physics.request_busy_s(model, service.prompt_tokens, service.output_tokens, 1.0))
        slow = sum(
            physics.request_busy_s(model, service.prompt_tokens, service.output_tokens, ratio)
        )
        out[service.name] = {
            "decode_tokens_per_s": 1.0 - decode,
            "requests_per_s": 1.0 - float(fast / slow),
        }
    return out


@dataclass(frozen=True, slots=True, eq=False)
class ClockSetup:
    """Each policy's starting clocks and what deciding clocks during the run needs."""

    start: FloatArray
    """Clock ratio per policy and service at hour 0: the tuned clock where the policy tunes,
    else the maximum."""
    tuned: list[float]
    """The tuned clock ratio per service (empty when no policy tunes)."""
    reasons: list[str]
    """Why each service's tuned clock was chosen (empty when no policy tunes)."""
    joint: tuple[bool, ...]
    """Per policy: are its clocks decided with its replicas every control interval?"""
    sweeps: list[list[ClockSample]]
    limits: list[ClockBounds]
    tuned_mhz: list[int]


def clock_setup(scenario: Scenario, specs: Sequence[PolicySpec]) -> ClockSetup:
    """Tune the clocks the policies that tune start at; prepare the joint decisions."""
    gpu = scenario.racks.gpu_curve
    clock = np.ones((len(specs), len(scenario.services)))
    tuned: list[float] = []
    reasons: list[str] = []
    if any(s.tuned_clocks for s in specs):
        tuned, reasons = tuned_clock_ratios(scenario)
        for p, spec in enumerate(specs):
            if spec.tuned_clocks:
                clock[p] = tuned
    # Where clocks are decided with the replicas under the cap (`clocks_under_cap`), each
    # policy's clocks move during the run (`Timing.update` follows them).
    joint = tuple(s.joint_clocks and s.tuned_clocks and s.ceilings == "headroom" for s in specs)
    sweeps = clock_sweeps(scenario) if any(joint) else []
    limits = clock_bounds(scenario)
    tuned_mhz = (
        [round(float(r) * gpu.max_clock_mhz) for r in clock[joint.index(True)]]
        if any(joint)
        else []
    )
    return ClockSetup(clock, tuned, reasons, joint, sweeps, limits, tuned_mhz)


def decide_clocks(
    scenario: Scenario,
    headroom: HeadroomSettings,
    setup: ClockSetup,
    p: int,
    *,
    clock: FloatArray,
    ceiling: IntArray,
    states: list[CappingState],
    idle_w: float,
    cap_w: float,
    site_w: float,
    service_w: FloatArray,
    replicas: IntArray,
    free: int,
    predicted_w: float | None,
    settled: BoolArray,
    changeable: BoolArray,
) -> BoolArray:
    """Policy p's clocks decided with its replicas (`clocks_under_cap`) on what the
    controller measures: the dynamic watts the cap leaves (the cap less the margin, less
    the measured site power that is not the targets' work), each target's demand envelope
    and its seats. A changed clock rescales the target's power model by the sweep's
    ratios (`rescale_for_clock`). A clock rises only into what both the plan's prediction
    and the measured site power leave under the cap, and only once settled; it changes only
    where `changeable` (`CLOCK_CHANGE_INTERVAL_S` since its last change). Returns which
    services' clocks changed; `clock` and `states` are updated in place."""
    services = scenario.services
    max_mhz = scenario.racks.gpu_curve.max_clock_mhz
    sweeps, limits = setup.sweeps, setup.limits
    usable_w = cap_w * (1.0 - headroom.safety_margin_fraction)
    budget_w = dynamic_budget_w(
        usable_w,
        site_w,
        [(float(service_w[j]), int(replicas[j])) for j in range(len(services))],
        idle_w,
    )
    current = [round(float(clock[p, j]) * max_mhz) for j in range(len(services))]
    learners = states[p].targets
    picks = clocks_under_cap(
        [
            ClockTarget(
                name=s.name,
                samples=tuple(sweeps[j]),
                tuned_mhz=setup.tuned_mhz[j],
                current_mhz=current[j],
                demand_tokens_per_s=(
                    learners[s.name].demand_tokens_per_s if s.name in learners else None
                ),
                seats=min(s.max_replicas, int(replicas[j]) + free),
                allowed_replicas=max(int(replicas[j]), int(ceiling[p, j])),
                priority=s.priority,
                max_p99_token_latency_s=limits[j].max_p99_token_latency_s,
                settled=bool(settled[j]),
                changeable=bool(changeable[j]),
            )
            for j, s in enumerate(services)
        ],
        dynamic_budget_w=budget_w,
        idle_w=idle_w,
        spare_w=spare_w(usable_w, site_w, predicted_w),
    )
    moved = np.zeros(len(services), dtype=bool)
    for j, s in enumerate(services):
        new = picks[s.name]
        if new == current[j]:
            continue
        ratios = clock_change_ratios(sweeps[j], current[j], new, idle_w)
        if ratios is None:
            continue
        states[p] = rescale_for_clock(states[p], s.name, *ratios)
        clock[p, j] = new / max_mhz
        moved[j] = True
    return moved
