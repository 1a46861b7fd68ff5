"""How many GPUs one replica of a target should hold (its tensor-parallel size), issue 23.

VPA sizes CPU and memory only; a GPU count per replica is Climatik's to recommend, the way
DynamoLLM reconfigures instance size for energy. The recommendation predicts, for every size a
node can hold, the tokens per joule and the SLO attainment at the target's measured load, and
picks the most efficient size that meets the SLO goal.

Energy comes from the same measurements as the ceilings' power model (`power_model`): the watts
per replica the power-cap reconciler learns, and the tokens per second it measures. A replica's
watts are its GPUs' idle draw plus dynamic watts that follow the tokens it serves ("power follows
work", SIMULATOR.md), so the measured replica gives the dynamic joules per token at the current
size, `J(t0) = (W0 - t0 * P_idle) / (L / n0)`, and the throughput model below scales it to
another size: `J(t) = J(t0) * [t * step(t, b(t)) / b(t)] / [t0 * step(t0, b(t0)) / b(t0)]`
(each of t GPUs at decode power for one step of b(t) tokens).

Throughput versus tensor-parallel size t (stated here, after SIMULATOR.md's decode model):

- A decode step of a batch of b sequences takes `(s1 + k * b) * (sigma * t_ref / t + 1 - sigma)`:
  the reference step (30 ms at batch 1, growing linearly with the batch) measured at `t_ref`
  GPUs, of which the share `sigma` is sharded work (weight and KV reads, matmuls) that shrinks with
  more GPUs and the rest is communication and fixed overhead that does not.
- The batch is bounded by the KV cache: `0.9 * t * gpu_memory - weights`, so a replica of too few
  GPUs cannot hold the model at all, and by the time-between-tokens SLO (a step may not exceed
  it), and by the engine's `max_batch`.
- A replica's capacity is `b / step(t, b)` tokens per second at its largest admissible batch b.
- Prefill scales like the step; time to first token waits `prefill * u / (1.02 - u)` at
  utilisation u, and the share of requests meeting the TTFT SLO is `1 - exp(-slack / wait)` as in
  the twin (`climatik.sim.physics.ttft_met_fraction`).

The load L is served by `ceil(L / (u_target * capacity))` replicas (what an autoscaler aiming at
`u_target` keeps). Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """A model on one GPU type, as the throughput model needs it (defaults: a 70B model in
    16-bit weights on H100s, SIMULATOR.md's reference decode step at 8 GPUs)."""

    weights_gb: float = 140.0
    gpu_memory_gb: float = 80.0
    reference_gpus: int = 8
    step_s_batch1: float = 0.030
    step_s_per_sequence: float = (0.050 - 0.030) / 64
    sharded_share: float = 0.85
    max_batch: int = 256
    prefill_s: float = 0.1
    idle_w_per_gpu: float = 75.0


@dataclass(frozen=True, slots=True)
class SloGoal:
    """The latency objectives and the share of requests that must meet them."""

    ttft_s: float = 2.0
    tbt_s: float = 0.1
    attainment: float = 0.95


@dataclass(frozen=True, slots=True)
class SizeInput:
    """What was measured of one target, at its current GPUs per replica."""

    gpus_per_replica: int
    replicas: int
    watts_per_replica: float
    tokens_per_s: float
    gpus_per_node: int
    free_gpus_per_node: Sequence[int] = ()
    """Free GPUs on each node the target may use (only read when replicas are Pending)."""
    pending_replicas: int = 0


@dataclass(frozen=True, slots=True)
class SizePrediction:
    """One size at the measured load: replicas needed, power, tokens per joule, SLO share."""

    gpus_per_replica: int
    replicas: int
    watts: float
    tokens_per_joule: float
    slo_attainment: float


class SizeReason(StrEnum):
    KEEP = "Keep"
    EFFICIENCY = "Efficiency"
    SLO = "Slo"
    FRAGMENTED = "Fragmented"
    UNMEASURED = "Unmeasured"


@dataclass(frozen=True, slots=True)
class SizeRecommendation:
    current: SizePrediction | None
    recommended: SizePrediction | None
    reason: SizeReason
    candidates: tuple[SizePrediction, ...] = ()


DEFAULT_PROFILE = ModelProfile()
DEFAULT_SLO = SloGoal()

MIN_GAIN = 0.05
"""A different size must promise this much more tokens per joule: a resize is a rollout."""
SLO_TIE = 0.001
"""Predicted attainments closer than this (a tenth of a point) do not tell two sizes apart:
when no size meets the goal, a resize for less would trade tokens per joule for noise. It is
not narrowed for a strict goal: the prediction itself is off by up to a point under heavy load
(96.1 % against the twin's 97.1 % at 5,000 tokens/s, docs/vpa.md), and a tie of the 99.99 %
goal's own allowance (0.01 point) brought back the flips between sizes on 5 of 30 twin days
(up to 7 resizes, below fixed 8 GPUs in both tokens per joule and attainment)."""


def tied_with_best(attainments: dict[int, float]) -> list[int]:
    """The keys whose attainment is within `SLO_TIE` of the best (none meets the goal)."""
    top = max(attainments.values())
    return [key for key, value in attainments.items() if value >= top - SLO_TIE]


TARGET_UTILISATION = 0.8


def kv_cache_gb(gpus: int, profile: ModelProfile) -> float:
    return 0.9 * gpus * profile.gpu_memory_gb - profile.weights_gb


def step_s(gpus: int, batch: float, profile: ModelProfile) -> float:
    """Decode step time of `batch` sequences on `gpus` GPUs (the module docstring's model)."""
    scaling = profile.sharded_share * profile.reference_gpus / gpus + 1 - profile.sharded_share
    return (profile.step_s_batch1 + profile.step_s_per_sequence * batch) * scaling


def max_batch(gpus: int, profile: ModelProfile, slo: SloGoal) -> int:
    """The largest batch the KV cache, the engine and the time-between-tokens SLO admit (0: the
    model does not fit, or not even one sequence meets the SLO)."""
    kv = kv_cache_gb(gpus, profile)
    reference_kv = kv_cache_gb(profile.reference_gpus, profile)
    if kv <= 0 or reference_kv <= 0:
        return 0
    by_memory = min(profile.max_batch, int(64 * kv / reference_kv))
    scaling = step_s(gpus, 0, profile) / profile.step_s_batch1
    by_slo = int((slo.tbt_s / scaling - profile.step_s_batch1) / profile.step_s_per_sequence)
    return max(0, min(by_memory, by_slo))


def capacity_tokens_per_s(gpus: int, profile: ModelProfile, slo: SloGoal) -> float:
    batch = max_batch(gpus, profile, slo)
    return batch / step_s(gpus, batch, profile) if batch > 0 else 0.0


def sizes(gpus_per_node: int, profile: ModelProfile, slo: SloGoal) -> tuple[int, ...]:
    """Tensor-parallel sizes a node can hold: powers of two up to its GPUs, the model fitting."""
    out = []
    size = 1
    while size <= gpus_per_node:
        if max_batch(size, profile, slo) > 0:
            out.append(size)
        size *= 2
    return tuple(out)


def _dynamic_j_per_token_shape(gpus: int, profile: ModelProfile, slo: SloGoal) -> float:
    batch = max_batch(gpus, profile, slo)
    return gpus * step_s(gpus, batch, profile) / batch


def predict(
    gpus: int,
    tokens_per_s: float,
    dynamic_j_per_token: float,
    profile: ModelProfile,
    slo: SloGoal,
) -> SizePrediction:
    """The given size serving `tokens_per_s`, at `dynamic_j_per_token` for this size."""
    capacity = capacity_tokens_per_s(gpus, profile, slo)
    replicas = max(1, math.ceil(tokens_per_s / (TARGET_UTILISATION * capacity)))
    utilisation = min(tokens_per_s / (replicas * capacity), 1.0)
    watts = replicas * gpus * profile.idle_w_per_gpu + tokens_per_s * dynamic_j_per_token
    prefill = profile.prefill_s * step_s(gpus, 0, profile) / profile.step_s_batch1
    wait = prefill * utilisation / (1.02 - utilisation)
    slack = slo.ttft_s - prefill
    attainment = 0.0 if slack <= 0 else 1.0 - math.exp(-slack / max(wait, 1e-6))
    return SizePrediction(
        gpus_per_replica=gpus,
        replicas=replicas,
        watts=watts,
        tokens_per_joule=tokens_per_s / watts if watts > 0 else 0.0,
        slo_attainment=attainment,
    )


def predictions(
    measured: SizeInput, profile: ModelProfile, slo: SloGoal
) -> tuple[SizePrediction, ...] | None:
    """Every admissible size at the measured load, anchored on the measured replica's dynamic
    energy per token; None when the measurement cannot anchor it (no tokens, no dynamic watts,
    or a current size the model says cannot hold the model)."""
    t0 = measured.gpus_per_replica
    if measured.tokens_per_s <= 0 or measured.replicas <= 0 or max_batch(t0, profile, slo) <= 0:
        return None
    dynamic_w = measured.watts_per_replica - t0 * profile.idle_w_per_gpu
    if dynamic_w <= 0:
        return None
    anchor = dynamic_w / (measured.tokens_per_s / measured.replicas)
    shape0 = _dynamic_j_per_token_shape(t0, profile, slo)
    out = []
    for gpus in sorted({*sizes(measured.gpus_per_node, profile, slo), t0}):
        j_per_token = anchor * _dynamic_j_per_token_shape(gpus, profile, slo) / shape0
        out.append(predict(gpus, measured.tokens_per_s, j_per_token, profile, slo))
    return tuple(out)


def recommend_size(
    measured: SizeInput,
    profile: ModelProfile = DEFAULT_PROFILE,
    slo: SloGoal = DEFAULT_SLO,
) -> SizeRecommendation:
    """The GPUs per replica to run at the measured load.

    - Pending replicas that no node has the free GPUs for: the largest size that fits the
      freest node (`Fragmented`), if the model fits it at all.
    - Otherwise the most tokens per joule among the sizes meeting the SLO goal (`Efficiency`),
      unless it beats the current size by less than `MIN_GAIN` (`Keep`); when the current size
      misses the goal, the size with the best attainment if none meets it (`Slo`; sizes
      within `SLO_TIE` of the best count as equal, the current one kept among them unless
      another promises `MIN_GAIN` more tokens per joule, then `Efficiency`).
    """
    found = predictions(measured, profile, slo)
    free = max(measured.free_gpus_per_node, default=0)
    if measured.pending_replicas > 0 and free < measured.gpus_per_replica:
        fitting = [s for s in sizes(measured.gpus_per_node, profile, slo) if s <= free]
        if fitting:
            by_size = {p.gpus_per_replica: p for p in found or ()}
            current = by_size.get(measured.gpus_per_replica)
            chosen = by_size.get(fitting[-1]) or SizePrediction(fitting[-1], 0, 0.0, 0.0, 0.0)
            return SizeRecommendation(current, chosen, SizeReason.FRAGMENTED, tuple(found or ()))
    if found is None:
        return SizeRecommendation(None, None, SizeReason.UNMEASURED)
    current = next(p for p in found if p.gpus_per_replica == measured.gpus_per_replica)
    meeting = [p for p in found if p.slo_attainment >= slo.attainment]
    if not meeting:
        # No size meets the goal: the best attainment, sizes tied with it counting as equal
        # (then the most tokens per joule, and a resize only for MIN_GAIN of them).
        tied = tied_with_best({p.gpus_per_replica: p.slo_attainment for p in found})
        level = [p for p in found if p.gpus_per_replica in tied]
        best = max(level, key=lambda p: p.tokens_per_joule)
        if current not in level:
            return SizeRecommendation(current, best, SizeReason.SLO, found)
        if best.tokens_per_joule < (1 + MIN_GAIN) * current.tokens_per_joule:
            return SizeRecommendation(current, current, SizeReason.KEEP, found)
        return SizeRecommendation(current, best, SizeReason.EFFICIENCY, found)
    best = max(meeting, key=lambda p: p.tokens_per_joule)
    if current.slo_attainment < slo.attainment:
        return SizeRecommendation(current, best, SizeReason.SLO, found)
    if best.tokens_per_joule < (1 + MIN_GAIN) * current.tokens_per_joule:
        return SizeRecommendation(current, current, SizeReason.KEEP, found)
    return SizeRecommendation(current, best, SizeReason.EFFICIENCY, found)
