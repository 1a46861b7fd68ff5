"""A target's power model, learned from what the controller measures: its watts per replica,
its dynamic energy per token above the idle draw (with its spread, charged as uncertainty),
the tokens one saturated replica serves, and a demand envelope; and what n replicas of it are
predicted to draw at its demand. Power follows work: the replicas a demand needs cost their
dynamic power, further replicas only the idle draw of their nodes.
"""

from __future__ import annotations

import math
from dataclasses import replace

from climatik.domain.capping import CappingState, TargetLearnerState, TargetObservation
from climatik.policies.ceiling_settings import HeadroomSettings


def learn_watts_per_replica(
    previous: TargetLearnerState,
    target: TargetObservation,
    settings: HeadroomSettings,
    now_s: float,
) -> TargetLearnerState:
    """Fold one measurement of a target into its per-replica power estimate.

    After a fall in the replica count the measured watts still hold the removed replicas' work
    for a lag and a rate window: for `settings.settle_rounds` decisions they are shared over
    the count before the fall (`fell_from`), not the fewer replicas left, whose share would
    look like a rise (learned fast, forgotten slowly). After a rise the new replicas' draw is
    learned as it comes: it only grows as they start serving."""
    if target.watts is None or target.current_replicas <= 0:
        return previous
    replicas = max(target.current_replicas, _lagged_replicas(previous, target, settings))
    sample = target.watts / replicas
    estimate = previous.watts_per_replica
    if estimate is None or estimate <= 0:
        return replace(previous, watts_per_replica=sample, samples=1, last_data_s=now_s)
    ratio = settings.outlier_ratio
    sample = min(estimate * ratio, max(estimate / ratio, sample))
    weight = settings.rise_weight if sample > estimate else settings.fall_weight
    return replace(
        previous,
        watts_per_replica=estimate + weight * (sample - estimate),
        samples=previous.samples + 1,
        last_data_s=now_s,
    )


def _lagged_replicas(
    previous: TargetLearnerState, target: TargetObservation, settings: HeadroomSettings
) -> int:
    """The replicas a lagged measurement may still hold: the count before a fall this round, or
    before one within `settings.settle_rounds` decisions; 0 otherwise."""
    seen = previous.replicas_seen
    if seen is None:
        return 0
    if target.current_replicas < seen:
        return max(seen, previous.fell_from or 0)
    settling = (
        seen == target.current_replicas and previous.steady_rounds + 1 < settings.settle_rounds
    )
    return previous.fell_from or 0 if settling else 0


def _demand_envelope(
    previous: float | None, target: TargetObservation, settings: HeadroomSettings
) -> float | None:
    """The demand envelope after this round: up at once, down by `demand_fall_weight`."""
    demand = target.demand_tokens_per_s
    if demand is None:
        return previous
    if previous is None or demand >= previous:
        return demand
    return previous + settings.demand_fall_weight * (demand - previous)


SATURATION_BACKLOG = 1.1
"""Demand beyond this multiple of the tokens served: the target's replicas are saturated."""


def saturated(target: TargetObservation) -> bool:
    """Its demand exceeds what it serves by `SATURATION_BACKLOG`: its running replicas are at
    full load, and the rest of the demand waits."""
    demand = target.demand_tokens_per_s
    return (
        demand is not None
        and target.current_replicas > 0
        and demand > SATURATION_BACKLOG * (target.tokens_per_s or 0.0)
    )


def learn_energy_model(
    previous: TargetLearnerState,
    target: TargetObservation,
    settings: HeadroomSettings,
) -> TargetLearnerState:
    """Fold one measurement into the target's dynamic energy per token, its spread and, when
    the demand exceeds what is served, the tokens one replica serves at full load.

    The dynamic watts are the target's watts less the idle draw of the nodes its replicas
    occupy (`settings.idle_watts_per_replica`; 0 when idle is not measured under the cap, so
    the idle draw is then spread over the tokens: an over-estimate, never an under-estimate).
    Rounds with (almost) no tokens, within `settings.settle_rounds` decisions of a change in
    the replica count, or while the idle draw of a node-level scope is not known yet
    (`settings.idle_pending`), are skipped.
    """
    seen = previous.replicas_seen
    held = seen == target.current_replicas
    steady_rounds = previous.steady_rounds + 1 if held else 0
    steady = steady_rounds >= settings.settle_rounds
    state = replace(
        previous,
        replicas_seen=target.current_replicas,
        steady_rounds=steady_rounds,
        fell_from=(
            (previous.fell_from if steady_rounds < settings.settle_rounds else None)
            if held
            else _lagged_replicas(previous, target, settings) or None
        ),
        rose_from=(
            (previous.rose_from if steady_rounds < settings.settle_rounds else None)
            if held
            else (seen if seen is not None and target.current_replicas > seen else None)
        ),
        demand_tokens_per_s=_demand_envelope(previous.demand_tokens_per_s, target, settings),
    )
    if not steady or settings.idle_pending or target.watts is None or target.current_replicas <= 0:
        return state
    tokens = target.tokens_per_s or 0.0
    dynamic_w = target.watts - settings.idle_watts_per_replica * target.current_replicas
    if dynamic_w <= 0 or tokens < 1e-6 * target.watts:
        return state
    estimate = state.joules_per_token
    if (
        estimate is None
        or estimate <= 0
        or not state.dynamic_watts_avg
        or not state.tokens_per_s_avg
    ):
        state = replace(
            state,
            joules_per_token=dynamic_w / tokens,
            joules_per_token_spread=0.0,
            dynamic_watts_avg=dynamic_w,
            tokens_per_s_avg=tokens,
        )
    else:
        expected_w = estimate * tokens
        ratio = settings.outlier_ratio
        dynamic_w = min(expected_w * ratio, max(expected_w / ratio, dynamic_w))
        weight = settings.energy_weight
        dynamic_avg = state.dynamic_watts_avg + weight * (dynamic_w - state.dynamic_watts_avg)
        tokens_avg = state.tokens_per_s_avg + weight * (tokens - state.tokens_per_s_avg)
        # The residual against the estimate, relative to the typical dynamic power: a round
        # with few tokens has a small residual in watts even when its ratio is far off.
        deviation = abs(dynamic_w - expected_w) / max(estimate * tokens_avg, expected_w)
        state = replace(
            state,
            joules_per_token=dynamic_avg / tokens_avg,
            joules_per_token_spread=(
                state.joules_per_token_spread + weight * (deviation - state.joules_per_token_spread)
            ),
            dynamic_watts_avg=dynamic_avg,
            tokens_per_s_avg=tokens_avg,
        )
    if saturated(target):
        per_replica = tokens / target.current_replicas
        known = state.tokens_per_replica
        if known is None:
            state = replace(state, tokens_per_replica=per_replica)
        else:
            # Every such sample is a full replica's, so a plain average (not a peak tracker).
            weight = settings.energy_weight
            state = replace(state, tokens_per_replica=known + weight * (per_replica - known))
    return state


def joules_per_token_bound(
    joules_per_token: float, learner: TargetLearnerState, settings: HeadroomSettings
) -> float:
    """The energy per token plus one standard error of its moving average (the samples'
    spread x sqrt(w / (2 - w)) for weight w): the model's uncertainty, charged."""
    weight = settings.energy_weight
    error = learner.joules_per_token_spread * math.sqrt(weight / (2.0 - weight))
    return joules_per_token * (1.0 + error)


def demand_watts(
    target: TargetObservation, learner: TargetLearnerState, settings: HeadroomSettings
) -> float | None:
    """Dynamic watts the target's demand asks for, with the model's uncertainty on top; `None`
    without a demand signal or an energy per token learned yet, and where the idle draw a
    replica brings is not known (a scope of pod power only: there a replica that adds no
    tokens still adds its GPUs' idle draw, which nothing learns yet). Never below what it
    serves."""
    if (
        target.demand_tokens_per_s is None
        or learner.joules_per_token is None
        or settings.idle_watts_per_replica <= 0
    ):
        return None
    tokens_per_s = max(
        target.demand_tokens_per_s, learner.demand_tokens_per_s or 0.0, target.tokens_per_s or 0.0
    )
    return tokens_per_s * joules_per_token_bound(learner.joules_per_token, learner, settings)


def full_dynamic_watts(learner: TargetLearnerState, settings: HeadroomSettings) -> float | None:
    """One saturated replica's dynamic watts: energy per token x its tokens at full load.

    Not floored at the most one replica was measured to draw over idle: that peak may be from
    a faster clock, and with clocks decided with the replicas it cost `over-demand` 15 % of
    its tokens (1,277 M against 1,498 M)."""
    if learner.joules_per_token is None or learner.tokens_per_replica is None:
        return None
    per_token = joules_per_token_bound(learner.joules_per_token, learner, settings)
    return per_token * learner.tokens_per_replica


def rescale_for_clock(
    state: CappingState,
    target: str,
    energy_ratio: float,
    tokens_ratio: float,
    watts_ratio: float,
) -> CappingState:
    """The power model of `target` after its GPUs' clock changed: what it measured at the old
    clock (energy per token, a saturated replica's tokens, a replica's watts) times the
    ratios the tuning sweep measured between the clocks (`gpu_clock.clock_change_ratios`).
    The next round, whose window straddles the change, is not learned from."""
    learner = state.targets.get(target)
    if learner is None:
        return state

    def scaled(value: float | None, ratio: float) -> float | None:
        return None if value is None else value * ratio

    rescaled = replace(
        learner,
        joules_per_token=scaled(learner.joules_per_token, energy_ratio),
        tokens_per_replica=scaled(learner.tokens_per_replica, tokens_ratio),
        watts_per_replica=scaled(learner.watts_per_replica, watts_ratio),
        replicas_seen=None,
        steady_rounds=0,
    )
    return replace(state, targets={**state.targets, target: rescaled})
