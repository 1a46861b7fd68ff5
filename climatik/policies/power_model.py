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
    """Fold one measurement of a target into its per-replica power estimate."""
    if target.watts is None or target.current_replicas <= 0:
        return previous
    sample = target.watts / target.current_replicas
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
    Rounds with (almost) no tokens, or right after the replica count changed, are skipped.
    """
    steady = previous.replicas_seen == target.current_replicas
    state = replace(
        previous,
        replicas_seen=target.current_replicas,
        demand_tokens_per_s=_demand_envelope(previous.demand_tokens_per_s, target, settings),
    )
    if not steady or target.watts is None or target.current_replicas <= 0:
        return state
    tokens = target.tokens_per_s or 0.0
    dynamic_w = target.watts - settings.idle_watts_per_replica * target.current_replicas
    if dynamic_w <= 0 or tokens < 1e-6 * target.watts:
        return state
    sample = dynamic_w / tokens
    estimate = state.joules_per_token
    ratio = settings.outlier_ratio
    if estimate is None or estimate <= 0:
        state = replace(state, joules_per_token=sample, joules_per_token_spread=0.0)
    else:
        sample = min(estimate * ratio, max(estimate / ratio, sample))
        weight = settings.energy_weight
        deviation = abs(sample / estimate - 1.0)
        state = replace(
            state,
            joules_per_token=estimate + weight * (sample - estimate),
            joules_per_token_spread=(
                state.joules_per_token_spread + weight * (deviation - state.joules_per_token_spread)
            ),
        )
    demand = target.demand_tokens_per_s
    if demand is not None and demand > SATURATION_BACKLOG * tokens:
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
    """One saturated replica's dynamic watts: energy per token x its tokens at full load."""
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
    )
    return replace(state, targets={**state.targets, target: rescaled})
