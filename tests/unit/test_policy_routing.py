"""The tokens-per-watt picker: efficient where there is room, never into a queue it can avoid."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.routing import EndpointReading, LoadCurve, PickReason, RoutingSettings
from climatik.policies.routing import pick_endpoint

SETTINGS = RoutingSettings()


def _server(
    name: str,
    tpj: float | None,
    running: float,
    waiting: float = 0.0,
    *,
    kv_cache_usage: float | None = None,
    added_since_reading: int = 0,
    healthy: bool = True,
) -> EndpointReading:
    """A server read two seconds ago."""
    return EndpointReading(
        name=name,
        healthy=healthy,
        tokens_per_joule=tpj,
        running=running,
        waiting=waiting,
        kv_cache_usage=kv_cache_usage,
        age_s=2.0,
        added_since_reading=added_since_reading,
    )


def test_the_most_efficient_server_with_room_gets_the_request() -> None:
    old_gpu = _server("a100", 0.8, running=10)
    new_gpu = _server("h100", 1.4, running=40)
    assert pick_endpoint([old_gpu, new_gpu], SETTINGS) == (
        pick_endpoint([new_gpu, old_gpu], SETTINGS)
    )
    pick = pick_endpoint([old_gpu, new_gpu], SETTINGS)
    assert (pick.endpoint, pick.reason) == ("h100", PickReason.EFFICIENT)


def test_a_queueing_server_is_passed_over_for_one_with_room() -> None:
    queueing = _server("h100", 1.4, running=64, waiting=3)
    pick = pick_endpoint([queueing, _server("a100", 0.8, running=10)], SETTINGS)
    assert pick.endpoint == "a100"


def test_the_router_counts_what_it_sent_since_the_readings() -> None:
    """A KV cache 80 % full at 40 requests holds 45 within the 0.9 limit: 5 more fill it."""
    nearly_full = _server("h100", 1.4, running=40, kv_cache_usage=0.8, added_since_reading=5)
    assert (
        pick_endpoint([nearly_full, _server("a100", 0.8, running=1)], SETTINGS).endpoint == "a100"
    )
    room = _server("h100", 1.4, running=40, kv_cache_usage=0.8, added_since_reading=4)
    assert pick_endpoint([room, _server("a100", 0.8, running=1)], SETTINGS).endpoint == "h100"


def test_stale_or_missing_readings_fall_back_to_the_least_open_requests() -> None:
    stale = EndpointReading(
        "a", tokens_per_joule=2.0, running=0, waiting=0, age_s=60, open_requests=5
    )
    missing = EndpointReading("b", open_requests=2)
    pick = pick_endpoint([stale, missing], SETTINGS)
    assert (pick.endpoint, pick.reason) == ("b", PickReason.NO_DATA)


def test_when_every_server_queues_the_shortest_queue_per_batch_wins() -> None:
    long_queue = _server("a", 1.4, running=64, waiting=32)
    short_queue = _server("b", 0.8, running=16, waiting=2)
    pick = pick_endpoint([long_queue, short_queue], SETTINGS)
    assert (pick.endpoint, pick.reason) == ("b", PickReason.ALL_BUSY)


def test_no_healthy_server_no_pick() -> None:
    pick = pick_endpoint([_server("a", 1.0, running=1, healthy=False)], SETTINGS)
    assert (pick.endpoint, pick.reason) == (None, PickReason.NO_ENDPOINT)
    assert pick_endpoint([], SETTINGS).endpoint is None


def test_a_session_keeps_its_server_while_it_is_nearly_the_best() -> None:
    servers = [_server(f"s{i}", 1.0 + 0.01 * i, running=4) for i in range(6)]
    picks = {pick_endpoint(servers, SETTINGS, session_key=f"user-{n}").endpoint for n in range(50)}
    assert len(picks) > 1  # sessions spread over near-equal servers
    again = pick_endpoint(servers, SETTINGS, session_key="user-7")
    assert again == pick_endpoint(list(reversed(servers)), SETTINGS, session_key="user-7")
    assert again.reason is PickReason.AFFINITY
    # Its server made far less efficient than the best: efficiency wins over affinity.
    worse = [_server(s.name, 0.5, running=4) if s.name == again.endpoint else s for s in servers]
    assert pick_endpoint(worse, SETTINGS, session_key="user-7").endpoint != again.endpoint


_readings = st.builds(
    EndpointReading,
    name=st.sampled_from([f"pod-{i}" for i in range(8)]),
    healthy=st.booleans(),
    tokens_per_joule=st.none() | st.floats(0.0, 5.0),
    running=st.none() | st.floats(0, 300),
    waiting=st.none() | st.sampled_from([0.0, 0.0, 1.0, 20.0]),
    kv_cache_usage=st.none() | st.floats(0.0, 1.0),
    age_s=st.none() | st.floats(0, 60),
    added_since_reading=st.integers(-5, 50),
    open_requests=st.integers(0, 50),
)
_endpoint_sets = st.lists(_readings, max_size=8, unique_by=lambda e: e.name)


@given(_endpoint_sets, st.none() | st.text(max_size=8), st.randoms())
def test_picks_are_healthy_order_independent_and_never_into_an_avoidable_queue(
    endpoints: list[EndpointReading], session: str | None, rng: random.Random
) -> None:
    pick = pick_endpoint(endpoints, SETTINGS, session_key=session)
    shuffled = list(endpoints)
    rng.shuffle(shuffled)
    assert pick_endpoint(shuffled, SETTINGS, session_key=session) == pick
    healthy = {e.name: e for e in endpoints if e.healthy}
    assert (pick.endpoint is None) == (not healthy)
    if pick.endpoint is None:
        return
    assert pick.endpoint in healthy
    if pick.reason in (PickReason.EFFICIENT, PickReason.AFFINITY):
        # A server that queued when read has room only if more of this router's requests to
        # it finished since than its queue held.
        chosen = healthy[pick.endpoint]
        if chosen.waiting:
            assert chosen.added_since_reading <= -chosen.waiting - 1
    clearly_free = [
        e
        for e in healthy.values()
        if e.tokens_per_joule is not None
        and e.running is not None
        and e.waiting == 0
        and e.age_s is not None
        and e.age_s <= SETTINGS.max_reading_age_s
        and e.kv_cache_usage is None
        and e.running + e.added_since_reading + 1 <= SETTINGS.max_batch
    ]
    if clearly_free:
        assert pick.reason in (PickReason.EFFICIENT, PickReason.AFFINITY)


@given(_endpoint_sets)
def test_without_a_session_no_server_with_room_is_more_efficient_than_the_pick(
    endpoints: list[EndpointReading],
) -> None:
    pick = pick_endpoint(endpoints, SETTINGS)
    if pick.reason is not PickReason.EFFICIENT:
        return
    chosen = next(e for e in endpoints if e.name == pick.endpoint)
    others = [e for e in endpoints if e.healthy and e.name != pick.endpoint]
    for other in others:
        # Against each rival alone it still wins: no rival with room is more efficient.
        assert pick_endpoint([chosen, other], SETTINGS) == pick


@given(_endpoint_sets, st.floats(0.01, 3.0))
def test_a_more_efficient_pick_stays_picked(endpoints: list[EndpointReading], gain: float) -> None:
    """Raising the chosen server's tokens per joule never moves the request elsewhere."""
    pick = pick_endpoint(endpoints, SETTINGS)
    if pick.reason is not PickReason.EFFICIENT:
        return
    better = [
        dataclasses.replace(e, tokens_per_joule=(e.tokens_per_joule or 0) + gain)
        if e.name == pick.endpoint
        else e
        for e in endpoints
    ]
    assert pick_endpoint(better, SETTINGS) == pick


def test_a_server_that_queued_has_no_room_for_float_dust() -> None:
    """Found by the property test: 1e-53 requests running, one waiting, one of ours finished
    since. Its load is about what it runs, so one more request does not fit."""
    dusty = EndpointReading(
        "pod-1",
        tokens_per_joule=0.0,
        running=9.4e-54,
        waiting=1.0,
        age_s=0.0,
        added_since_reading=-1,
    )
    assert pick_endpoint([dusty], SETTINGS).reason is PickReason.ALL_BUSY


# Learned load curves and latency budgets.

# The routing twin's 8-GPU servers at flat decode power (GPU watts, seconds per output token).
H100 = LoadCurve(watts=3040.0, watts_per_request=0.0, tpot_s=0.0300, tpot_s_per_request=3.1e-4)
A100 = LoadCurve(watts=2000.0, watts_per_request=0.0, tpot_s=0.0498, tpot_s_per_request=5e-4)
BUDGETS = RoutingSettings(tpot_budget_s=0.1, ttft_budget_s=2.0)


def test_a_server_whose_last_window_was_idle_is_judged_by_its_curve() -> None:
    """Issue 22's diagnosis: an H100 that idled through its last window reads 0 tokens per
    joule though it now runs as many requests as a busy A100; by their curves the H100 makes
    more tokens per joule at the batch the request would join."""
    h100 = dataclasses.replace(_server("h100", 0.0, running=5), curve=H100)
    a100 = dataclasses.replace(_server("a100", 0.09, running=5), curve=A100)
    assert H100.tokens_per_joule_at(6) > A100.tokens_per_joule_at(6)
    assert pick_endpoint([h100, a100], SETTINGS).endpoint == "h100"
    without_curves = [dataclasses.replace(e, curve=None) for e in (h100, a100)]
    assert pick_endpoint(without_curves, SETTINGS).endpoint == "a100"


def test_a_server_predicted_past_the_tpot_budget_has_no_room() -> None:
    """An A100 at 101 requests would decode a token in 100.3 ms: past the 100 ms budget, though
    its batch has slots, so the request goes to the less efficient server within budget."""
    full = dataclasses.replace(_server("a100", 0.2, running=100), curve=A100)
    within = dataclasses.replace(_server("h100", 0.1, running=2), curve=H100)
    settings = dataclasses.replace(BUDGETS, max_batch=256)
    assert A100.tpot_s_at(101) > 0.1 >= A100.tpot_s_at(100)
    assert pick_endpoint([full, within], settings).endpoint == "h100"
    assert pick_endpoint([full, within], dataclasses.replace(SETTINGS, max_batch=256)).endpoint == (
        "a100"
    )  # batch slots only
    fewer = dataclasses.replace(full, running=99)
    assert pick_endpoint([fewer, within], settings).endpoint == "a100"


def test_a_server_whose_recent_prefills_fill_the_ttft_budget_has_no_room() -> None:
    """Six requests sent in the last 2 s at 0.3 s of prefill each: a seventh would wait 2.1 s."""
    slow_prefill = dataclasses.replace(A100, prefill_s=0.3)
    busy = dataclasses.replace(_server("a100", 0.2, running=8), curve=slow_prefill, sent_recently=6)
    other = dataclasses.replace(_server("h100", 0.1, running=1), curve=H100)
    assert pick_endpoint([busy, other], BUDGETS).endpoint == "h100"
    assert pick_endpoint([dataclasses.replace(busy, sent_recently=5), other], BUDGETS).endpoint == (
        "a100"
    )


def test_when_every_server_is_past_its_budget_the_fastest_predicted_gets_it() -> None:
    slow = dataclasses.replace(_server("a", 0.3, running=150), curve=A100)
    slower = dataclasses.replace(_server("b", 0.3, running=200), curve=A100)
    pick = pick_endpoint([slow, slower], dataclasses.replace(BUDGETS, max_batch=256))
    assert (pick.endpoint, pick.reason) == ("a", PickReason.ALL_BUSY)


_curves = st.builds(
    LoadCurve,
    watts=st.floats(500.0, 6000.0),
    watts_per_request=st.floats(0.0, 50.0),
    tpot_s=st.floats(0.01, 0.12),
    tpot_s_per_request=st.floats(0.0, 0.002),
    batch_seen=st.floats(1.0, 64.0),
    prefill_s=st.none() | st.floats(0.01, 1.0),
)
_with_curves = st.lists(
    st.builds(
        EndpointReading,
        name=st.sampled_from([f"pod-{i}" for i in range(8)]),
        healthy=st.booleans(),
        tokens_per_joule=st.none() | st.floats(0.0, 5.0),
        running=st.none() | st.floats(0, 80),
        waiting=st.none() | st.sampled_from([0.0, 0.0, 1.0, 20.0]),
        kv_cache_usage=st.none() | st.floats(0.0, 1.0),
        age_s=st.none() | st.floats(0, 20),
        added_since_reading=st.integers(-5, 50),
        open_requests=st.integers(0, 50),
        curve=st.none() | _curves,
        sent_recently=st.integers(0, 20),
    ),
    max_size=8,
    unique_by=lambda e: e.name,
)


def _predicted_tpot_s(e: EndpointReading) -> float | None:
    if e.curve is None:
        return None
    load = max((e.running or 0.0) + (e.waiting or 0.0) + e.added_since_reading, 0.0)
    return e.curve.tpot_s_at(load + 1.0)


@given(_with_curves, st.none() | st.text(max_size=8), st.randoms())
def test_a_server_predicted_past_the_tpot_budget_is_never_picked_over_one_within(
    endpoints: list[EndpointReading], session: str | None, rng: random.Random
) -> None:
    pick = pick_endpoint(endpoints, BUDGETS, session_key=session)
    shuffled = list(endpoints)
    rng.shuffle(shuffled)
    assert pick_endpoint(shuffled, BUDGETS, session_key=session) == pick
    if pick.reason in (PickReason.EFFICIENT, PickReason.AFFINITY):
        chosen = next(e for e in endpoints if e.name == pick.endpoint)
        predicted = _predicted_tpot_s(chosen)
        assert predicted is None or predicted <= 0.1
        if chosen.curve is not None and chosen.curve.prefill_s is not None:
            assert (chosen.sent_recently + 1) * chosen.curve.prefill_s <= 2.0
    # Once a server within every budget has room, nothing past a budget is chosen.
    within = [
        e
        for e in endpoints
        if e.healthy
        and e.curve is not None
        and e.curve.prefill_s is None
        and e.running is not None
        and e.waiting == 0
        and e.kv_cache_usage is None
        and e.age_s is not None
        and e.age_s <= BUDGETS.max_reading_age_s
        and (e.running + e.added_since_reading + 1) <= BUDGETS.max_batch
        and (_predicted_tpot_s(e) or 0.0) <= 0.1
    ]
    if within:
        assert pick.reason in (PickReason.EFFICIENT, PickReason.AFFINITY)


@given(_with_curves)
def test_without_budgets_a_curve_changes_only_how_efficiency_is_judged(
    endpoints: list[EndpointReading],
) -> None:
    """No budgets: room is batch slots, as for a reading without a curve."""
    pick = pick_endpoint(endpoints, SETTINGS)
    if pick.reason is PickReason.EFFICIENT:
        chosen = next(e for e in endpoints if e.name == pick.endpoint)
        others = [e for e in endpoints if e.healthy and e.name != pick.endpoint]
        for other in others:
            assert pick_endpoint([chosen, other], SETTINGS) == pick


def test_with_a_tpot_budget_a_server_without_a_curve_is_only_a_fallback() -> None:
    """Its time per token cannot be judged: it gets requests only when no server with a curve
    has room, as a server without readings does."""
    no_curve = _server("new", 2.0, running=0)
    known = dataclasses.replace(_server("h100", 0.1, running=10), curve=H100)
    assert pick_endpoint([no_curve, known], BUDGETS).endpoint == "h100"
    assert pick_endpoint([no_curve, known], SETTINGS).endpoint == "new"
    past_budget = dataclasses.replace(known, running=63, added_since_reading=0)
    settings = dataclasses.replace(BUDGETS, tpot_budget_s=0.045)
    assert H100.tpot_s_at(64) > 0.045
    pick = pick_endpoint([no_curve, past_budget], settings)
    assert (pick.endpoint, pick.reason) == ("new", PickReason.NO_DATA)
