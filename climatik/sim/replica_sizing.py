"""The twin's comparison for GPUs per replica (issue 23): one service through a diurnal day,
its tensor-parallel size chosen every `decide_every_s` by `policies.gpus_per_replica` from the
latest measurement, against every fixed size and against the physics' ceiling (`oracle_day`).

The twin's physics is `climatik.sim.physics`: a GPU's power at its decode busy share
(`gpu_power_w`), a server's overhead on its GPUs' dynamic power and its base draw shared by the
GPUs it holds (`server_power_w`, per GPU), the decode step at a batch fraction of the model's
`max_batch` (`decode_step_s`), prefill (`prefill_s`) and the TTFT share (`ttft_wait_s`,
`ttft_met_fraction`). SIMULATOR.md has no tensor-parallel dimension, so the twin takes the
policy module's stated one for it: step and prefill times scale by `sigma * t_ref / t + 1 -
sigma`, and the KV cache left after the weights bounds the batch. That part is shared with the
recommender, which is why the comparison tests the choice through the day (and the measurement
lag, the hysteresis and the cost of a resize) rather than the throughput model itself: from one
step's measurement the recommender predicts every size's watts exactly (tested), so what the
choice loses against `oracle_day` is lag, hysteresis and resizes, and what `oracle_day` gains
over the best fixed size is all the physics allows.

The recommender is fed the last step measured, as the live controller reads the latest
measurement in `status.targets`; an hour's mean (what this module fed it before) is the load of
half an hour ago, and its replica count, rounded, no longer matches its watts. Deciding every
15 minutes rather than every hour follows the diurnal ramps closer for one more resize or two
a day (figures in docs/vpa.md).

Each step the autoscaler runs as many replicas as keep them `target_utilisation` busy (at least
one), all load is served, and a step's requests meet the SLO in the share the TTFT model gives
when the decode step meets the time-between-tokens objective, else none. A resize costs the new
replicas' idle draw for the model's start-up time (a surge rollout: the old ones serve meanwhile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from climatik.policies.gpus_per_replica import (
    ModelProfile,
    SizeInput,
    SloGoal,
    recommend_size,
    sizes,
    tied_with_best,
)
from climatik.sim.physics import (
    FloatArray,
    decode_step_s,
    gpu_power_w,
    prefill_s,
    server_power_w,
    ttft_met_fraction,
    ttft_wait_s,
)
from climatik.sim.scenario import MODEL_CLASSES, GpuModel, ModelClass, Traffic
from climatik.sim.workload import arrival_rates

GPUS_PER_SERVER = 8


@dataclass(frozen=True, slots=True)
class SizingScenario:
    """One service of a 70B model on H100 servers, through one weekday."""

    traffic: Traffic = field(
        default_factory=lambda: Traffic(peak_rps=4.0, trough_fraction=0.05, bursts_per_day=0.0)
    )
    output_tokens: int = 250
    prompt_tokens: int = 1000
    model: ModelClass = field(default_factory=lambda: MODEL_CLASSES["llama-70b-tp8"])
    gpu: GpuModel = field(default_factory=GpuModel)
    server_base_w: float = 2200.0
    server_gpu_overhead: float = 0.48
    profile: ModelProfile = field(default_factory=ModelProfile)
    slo: SloGoal = field(default_factory=SloGoal)
    target_utilisation: float = 0.8
    step_s: float = 300.0
    decide_every_s: float = 900.0
    hours: float = 24.0


@dataclass(frozen=True, slots=True)
class DayResult:
    """One way of choosing the size, over the day."""

    name: str
    tokens: float
    energy_j: float
    slo_attainment: float
    resizes: int
    sizes_used: tuple[int, ...]

    @property
    def tokens_per_joule(self) -> float:
        return self.tokens / self.energy_j if self.energy_j > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ServedStep:
    """One step of load served at one size: replicas run, their watts, the share within SLO."""

    replicas: int
    watts: float
    met: float


def _scaling(gpus: int, scenario: SizingScenario) -> float:
    p = scenario.profile
    return p.sharded_share * p.reference_gpus / gpus + 1 - p.sharded_share


def _batch_limit(gpus: int, scenario: SizingScenario) -> int:
    """The largest batch the KV cache, the engine and the time-between-tokens SLO admit."""
    p, model = scenario.profile, scenario.model
    kv = 0.9 * gpus * p.gpu_memory_gb - p.weights_gb
    reference = 0.9 * p.reference_gpus * p.gpu_memory_gb - p.weights_gb
    if kv <= 0:
        return 0
    by_memory = min(p.max_batch, int(model.max_batch * kv / reference))
    best = 0
    for batch in range(1, by_memory + 1):
        if _step_s(gpus, batch, scenario) <= scenario.slo.tbt_s:
            best = batch
    return best


def _step_s(gpus: int, batch: int, scenario: SizingScenario) -> float:
    model = scenario.model
    # decode_step_s is linear in the batch fraction; past max_batch it extends the same line.
    at_one = float(decode_step_s(model, 0.0, 1.0))
    at_max = float(decode_step_s(model, 1.0, 1.0))
    return (at_one + (at_max - at_one) * batch / model.max_batch) * _scaling(gpus, scenario)


def _capacity(gpus: int, scenario: SizingScenario) -> float:
    batch = _batch_limit(gpus, scenario)
    return batch / _step_s(gpus, batch, scenario) if batch else 0.0


def step_at(gpus: int, tokens_per_s: float, scenario: SizingScenario) -> ServedStep:
    """The twin's physics serving `tokens_per_s` with replicas of `gpus` GPUs."""
    capacity = _capacity(gpus, scenario)
    replicas = max(1, math.ceil(tokens_per_s / (scenario.target_utilisation * capacity)))
    busy = min(tokens_per_s / (replicas * capacity), 1.0)
    gpu_w = float(gpu_power_w(1.0, 0.0, busy, scenario.gpu))
    per_gpu = float(
        server_power_w(
            gpu_w,
            1,
            scenario.gpu.idle_w,
            scenario.server_base_w / GPUS_PER_SERVER,
            scenario.server_gpu_overhead,
        )
    )
    prefill = float(prefill_s(scenario.model, scenario.prompt_tokens, 1.0)) * _scaling(
        gpus, scenario
    )
    requests_per_s = tokens_per_s / scenario.output_tokens
    capacity_rps = replicas * capacity / scenario.output_tokens
    wait = float(ttft_wait_s(0.0, capacity_rps, prefill, busy))
    met = float(ttft_met_fraction(scenario.slo.ttft_s, prefill, wait)) if requests_per_s else 1.0
    return ServedStep(replicas, replicas * gpus * per_gpu, met)


def load_tokens_per_s(scenario: SizingScenario) -> FloatArray:
    """The day's load at each step, in output tokens per second."""
    steps = round(scenario.hours * 3600 / scenario.step_s)
    hours = np.arange(steps, dtype=np.float64) * scenario.step_s / 3600.0
    rates = arrival_rates(scenario.traffic, hours, scenario.step_s)
    return np.asarray(rates * scenario.output_tokens, dtype=np.float64)


def _idle_replica_w(gpus: int, scenario: SizingScenario) -> float:
    per_gpu = scenario.gpu.idle_w + scenario.server_base_w / GPUS_PER_SERVER
    return gpus * per_gpu


def run_day(scenario: SizingScenario, fixed_gpus: int | None) -> DayResult:
    """The day at a fixed size, or (`fixed_gpus=None`) with the size chosen each decision."""
    load = load_tokens_per_s(scenario)
    candidates = sizes(GPUS_PER_SERVER, scenario.profile, scenario.slo)
    gpus = fixed_gpus if fixed_gpus is not None else max(candidates)
    every = max(1, round(scenario.decide_every_s / scenario.step_s))
    tokens = energy = met_tokens = 0.0
    resizes = 0
    used = [gpus]
    last: tuple[ServedStep, float] | None = None
    for index, tokens_per_s in enumerate(load):
        if fixed_gpus is None and index and index % every == 0 and last is not None:
            measured, measured_tokens = last
            found = recommend_size(
                SizeInput(
                    gpus,
                    measured.replicas,
                    measured.watts / measured.replicas,
                    measured_tokens,
                    GPUS_PER_SERVER,
                ),
                scenario.profile,
                scenario.slo,
            )
            chosen = found.recommended.gpus_per_replica if found.recommended else gpus
            if chosen != gpus:
                gpus = chosen
                resizes += 1
                used.append(gpus)
                starting = step_at(gpus, float(tokens_per_s), scenario).replicas
                energy += starting * _idle_replica_w(gpus, scenario) * scenario.model.startup_s
        step = step_at(gpus, float(tokens_per_s), scenario)
        last = (step, float(tokens_per_s))
        served = float(tokens_per_s) * scenario.step_s
        tokens += served
        met_tokens += served * step.met
        energy += step.watts * scenario.step_s
    name = (
        f"fixed {fixed_gpus} GPUs"
        if fixed_gpus is not None
        else f"chosen every {scenario.decide_every_s / 60:g} min"
    )
    return DayResult(
        name=name,
        tokens=tokens,
        energy_j=energy,
        slo_attainment=met_tokens / tokens if tokens else 1.0,
        resizes=resizes,
        sizes_used=tuple(sorted(set(used))),
    )


def oracle_day(scenario: SizingScenario) -> DayResult:
    """The physics' ceiling: at every step the size with the most tokens per joule among those
    meeting the SLO goal (else among those tied with the best attainment, `tied_with_best`),
    known in advance and switched for free.
    No choosing from measurements can beat it; its gain over the best fixed size bounds what
    choosing can gain."""
    tokens = energy = met_tokens = 0.0
    used: set[int] = set()
    candidates = sizes(GPUS_PER_SERVER, scenario.profile, scenario.slo)
    for tokens_per_s in load_tokens_per_s(scenario):
        steps = {g: step_at(g, float(tokens_per_s), scenario) for g in candidates}
        meeting = [g for g, s in steps.items() if s.met >= scenario.slo.attainment]
        if not meeting:  # the best attainment, as the recommender counts ties
            meeting = tied_with_best({g: s.met for g, s in steps.items()})
        gpus = min(meeting, key=lambda g: steps[g].watts)
        used.add(gpus)
        served = float(tokens_per_s) * scenario.step_s
        tokens += served
        met_tokens += served * steps[gpus].met
        energy += steps[gpus].watts * scenario.step_s
    return DayResult(
        name="oracle each step",
        tokens=tokens,
        energy_j=energy,
        slo_attainment=met_tokens / tokens if tokens else 1.0,
        resizes=0,
        sizes_used=tuple(sorted(used)),
    )


def compare(scenario: SizingScenario) -> tuple[DayResult, list[DayResult]]:
    """The chosen-each-hour day and every fixed size's day."""
    fixed = [run_day(scenario, g) for g in sizes(GPUS_PER_SERVER, scenario.profile, scenario.slo)]
    return run_day(scenario, None), fixed
