"""GPUs per replica (tensor-parallel size): the throughput-vs-size model and the recommender."""

from __future__ import annotations

import math

from hypothesis import assume, given
from hypothesis import strategies as st

from climatik.policies.gpus_per_replica import (
    DEFAULT_PROFILE,
    DEFAULT_SLO,
    MIN_GAIN,
    SLO_TIE,
    ModelProfile,
    SizeInput,
    SizeReason,
    SloGoal,
    capacity_tokens_per_s,
    max_batch,
    recommend_size,
    sizes,
)

SMALL = ModelProfile(weights_gb=16.0, reference_gpus=1, step_s_batch1=0.012)
"""An 8B model: it fits one GPU, so every size from 1 to 8 is a candidate."""

profiles = st.sampled_from([DEFAULT_PROFILE, SMALL])


@st.composite
def measured(draw: st.DrawFn) -> tuple[ModelProfile, SizeInput]:
    profile = draw(profiles)
    current = draw(st.sampled_from(sizes(8, profile, DEFAULT_SLO)))
    replicas = draw(st.integers(1, 16))
    tokens = draw(
        st.floats(1.0, 0.8 * replicas * capacity_tokens_per_s(current, profile, DEFAULT_SLO))
    )
    joules_per_token = draw(st.floats(0.05, 5.0))
    watts = current * profile.idle_w_per_gpu + joules_per_token * tokens / replicas
    return profile, SizeInput(current, replicas, watts, tokens, gpus_per_node=8)


@given(measured())
def test_every_prediction_serves_the_measured_load_and_charges_at_least_the_idle_gpus(
    case: tuple[ModelProfile, SizeInput],
) -> None:
    profile, size_input = case
    found = recommend_size(size_input, profile)
    assert found.candidates, "a measured target has predictions"
    for p in found.candidates:
        assert max_batch(p.gpus_per_replica, profile, DEFAULT_SLO) > 0, "the model must fit"
        assert p.watts >= p.replicas * p.gpus_per_replica * profile.idle_w_per_gpu
        assert math.isclose(p.tokens_per_joule * p.watts, size_input.tokens_per_s, rel_tol=1e-9)
        assert 0.0 <= p.slo_attainment <= 1.0
        capacity = p.replicas * capacity_tokens_per_s(p.gpus_per_replica, profile, DEFAULT_SLO)
        assert capacity >= size_input.tokens_per_s


@given(measured())
def test_the_current_size_reproduces_the_measured_dynamic_energy(
    case: tuple[ModelProfile, SizeInput],
) -> None:
    profile, size_input = case
    found = recommend_size(size_input, profile)
    assert found.current is not None
    t0 = size_input.gpus_per_replica
    dynamic = size_input.replicas * (size_input.watts_per_replica - t0 * profile.idle_w_per_gpu)
    idle = found.current.replicas * t0 * profile.idle_w_per_gpu
    assert math.isclose(found.current.watts, idle + dynamic, rel_tol=1e-9)


@given(measured(), st.sampled_from([0.95, 0.999, 0.9999]))
def test_the_recommendation_is_the_most_efficient_size_meeting_the_slo_or_the_current(
    case: tuple[ModelProfile, SizeInput], goal: float
) -> None:
    profile, size_input = case
    slo = SloGoal(attainment=goal)
    found = recommend_size(size_input, profile, slo)
    current, chosen = found.current, found.recommended
    assert current is not None
    assert chosen is not None
    assert chosen in found.candidates
    meeting = [p for p in found.candidates if p.slo_attainment >= goal]
    if not meeting:
        top = max(p.slo_attainment for p in found.candidates)
        tie = SLO_TIE
        assert chosen.slo_attainment >= top - tie, "the best attainment, up to a tie"
        if chosen != current and current.slo_attainment >= top - tie:
            assert chosen.tokens_per_joule >= (1 + MIN_GAIN) * current.tokens_per_joule
            assert found.reason is SizeReason.EFFICIENCY
        if found.reason is SizeReason.SLO:
            assert chosen.slo_attainment > current.slo_attainment, "Slo means more in time"
        return
    assert chosen.slo_attainment >= goal
    best = max(p.tokens_per_joule for p in meeting)
    if found.reason is SizeReason.KEEP:
        assert chosen == current
        assert best < (1 + MIN_GAIN) * current.tokens_per_joule
    else:
        assert chosen.tokens_per_joule == best


def test_when_no_size_meets_the_goal_a_tie_in_attainment_is_not_worth_a_resize() -> None:
    # 1,010 tokens/s on one 8-GPU replica: five 4-GPU replicas are predicted to serve 0.003
    # points more requests in time than it, at less than half its tokens per joule.
    found = recommend_size(
        SizeInput(8, 1, 4000.0, 1010.0, gpus_per_node=8), slo=SloGoal(attainment=0.9999)
    )
    by_size = {p.gpus_per_replica: p for p in found.candidates}
    assert 0 < by_size[4].slo_attainment - by_size[8].slo_attainment < SLO_TIE
    assert by_size[4].slo_attainment < 0.9999
    assert found.reason is SizeReason.KEEP
    assert found.recommended == by_size[8]


@given(measured(), st.lists(st.integers(0, 8), min_size=1, max_size=8), st.integers(1, 4))
def test_pending_replicas_that_fit_no_node_get_the_largest_size_that_does(
    case: tuple[ModelProfile, SizeInput], free: list[int], pending: int
) -> None:
    profile, size_input = case
    assume(max(free) < size_input.gpus_per_replica)
    blocked = SizeInput(
        size_input.gpus_per_replica,
        size_input.replicas,
        size_input.watts_per_replica,
        size_input.tokens_per_s,
        gpus_per_node=8,
        free_gpus_per_node=tuple(free),
        pending_replicas=pending,
    )
    found = recommend_size(blocked, profile)
    fitting = [s for s in sizes(8, profile, DEFAULT_SLO) if s <= max(free)]
    if not fitting:
        assert found.reason is not SizeReason.FRAGMENTED
        return
    assert found.reason is SizeReason.FRAGMENTED
    assert found.recommended is not None
    assert found.recommended.gpus_per_replica == fitting[-1]


def test_a_model_that_does_not_fit_is_never_a_candidate() -> None:
    # 140 GB of weights: two 80 GB GPUs leave no KV cache after the 10 % reserve.
    assert max_batch(2, DEFAULT_PROFILE, DEFAULT_SLO) == 0
    assert sizes(8, DEFAULT_PROFILE, DEFAULT_SLO) == (4, 8)


def test_light_load_prefers_fewer_gpus_and_heavy_load_more() -> None:
    """Idle GPUs dominate a lightly loaded target; batch capacity a loaded one (DynamoLLM)."""

    def chosen(tokens_per_s: float, current: int) -> int:
        capacity = capacity_tokens_per_s(current, DEFAULT_PROFILE, DEFAULT_SLO)
        replicas = max(1, math.ceil(tokens_per_s / (0.8 * capacity)))
        watts = current * 75 + 1.0 * tokens_per_s / replicas
        found = recommend_size(SizeInput(current, replicas, watts, tokens_per_s, 8))
        assert found.recommended is not None
        return found.recommended.gpus_per_replica

    assert chosen(50, current=8) == 4
    assert chosen(2000, current=4) == 8


def test_no_load_or_no_dynamic_power_is_unmeasured() -> None:
    assert recommend_size(SizeInput(8, 2, 900, 0.0, 8)).reason is SizeReason.UNMEASURED
    assert recommend_size(SizeInput(8, 2, 500, 100.0, 8)).reason is SizeReason.UNMEASURED
