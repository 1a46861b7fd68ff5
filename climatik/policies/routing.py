"""Which endpoint gets a request: the most tokens per joule among those with room (§10.1.1).

A model server's tokens per joule rise with its batch (the GPU's draw grows far slower than its
throughput), so filling the most efficient servers' batches first is what saves energy; but
a request sent to a server whose batch is full waits in its queue, which is latency the user
feels. vLLM queues (`num_requests_waiting`) only what its batch cannot admit, so a server has
room when its estimated load is below its estimated batch capacity:

- load: running and waiting when read, plus what this router sent there since (less what
  finished): readings are seconds old and a router sends hundreds of requests a second, so
  without its own count every request in between would go to the same server;
- capacity: what was running when it queued (a full batch), else the requests its KV cache
  holds within `kv_cache_limit` at the measured usage per request, at most `max_batch`;

and room means one more request fits: load + 1 <= capacity (not load < capacity, which float
readings of a nearly idle server could pass with no room at all).

A server with a learned load curve (`EndpointReading.curve`, `policies.load_curve`) is judged
by it: its efficiency is the tokens per joule the curve predicts at the batch the request would
join (load + 1), and with a `tpot_budget_s` it has room only while the curve predicts a time per
output token within the budget at that batch, since a batch slot is no use to a user whose
tokens come too slowly. With a `ttft_budget_s`, a server has no room either when the prefills
of what this router sent it within the last budget's seconds, and of this request, would take
longer than the budget at its measured prefill seconds: prefills run one at a time before the
first token, so past that the newest request waits longer than the budget. Without a curve,
its measured tokens per joule and batch slots decide, as before; but with a time-per-token
budget, which only a curve can judge, a server without one yet is a fallback, as one without
readings is.

When no server with fresh readings has room, a server whose readings are missing or stale may
(the one with the fewest of this router's requests open); when every server queues or is past
a budget, the shortest estimated queue per batch, then the shortest predicted time per output
token. Pure and order-independent: the same readings give the same pick whatever order the
endpoints are listed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from climatik.domain.routing import EndpointReading, Pick, PickReason, RoutingSettings


def pick_endpoint(
    endpoints: Sequence[EndpointReading],
    settings: RoutingSettings,
    *,
    session_key: str | None = None,
) -> Pick:
    """The endpoint for one request and why (see the module docstring)."""
    healthy = [e for e in endpoints if e.healthy]
    if not healthy:
        return Pick(None, PickReason.NO_ENDPOINT)
    fresh = [e for e in healthy if _fresh(e, settings)]
    with_room = [e for e in fresh if _has_room(e, settings)]
    if with_room:
        best = max(with_room, key=lambda e: (_efficiency(e), -_fill(e, settings), e.name))
        if session_key is not None:
            own = max(healthy, key=lambda e: _rendezvous(session_key, e.name))
            floor = (1.0 - settings.affinity_tolerance) * _efficiency(best)
            if own in with_room and _efficiency(own) >= floor:
                return Pick(own.name, PickReason.AFFINITY)
        return Pick(best.name, PickReason.EFFICIENT)
    judged = {e.name for e in fresh}
    unknown = [e for e in healthy if e.name not in judged]
    if unknown:
        chosen = min(unknown, key=lambda e: (e.open_requests, _tie(session_key, e.name)))
        return Pick(chosen.name, PickReason.NO_DATA)
    chosen = min(fresh, key=lambda e: (_queue(e, settings), _tpot_s(e), _tie(session_key, e.name)))
    return Pick(chosen.name, PickReason.ALL_BUSY)


def _fresh(e: EndpointReading, settings: RoutingSettings) -> bool:
    """Readings to judge it by: efficiency and load, recent enough; with a time-per-token
    budget, a curve to judge that by (until it has one, it is a fallback, as without data)."""
    if settings.tpot_budget_s is not None and e.curve is None:
        return False
    return (
        (e.tokens_per_joule is not None or e.curve is not None)
        and e.running is not None
        and e.waiting is not None
        and e.age_s is not None
        and e.age_s <= settings.max_reading_age_s
    )


def _has_room(e: EndpointReading, settings: RoutingSettings) -> bool:
    """One more request fits its batch and, where budgets are set, its latency budgets."""
    if _load(e) + 1.0 > _capacity(e, settings):
        return False
    budget = settings.tpot_budget_s
    if budget is not None and _tpot_s(e) > budget:
        return False
    ttft_budget = settings.ttft_budget_s
    if ttft_budget is None or e.curve is None or e.curve.prefill_s is None:
        return True
    return (e.sent_recently + 1) * e.curve.prefill_s <= ttft_budget


def _efficiency(e: EndpointReading) -> float:
    """Tokens per joule at the batch a request would join, from its curve where it has one."""
    if e.curve is not None:
        return e.curve.tokens_per_joule_at(_load(e) + 1.0)
    return e.tokens_per_joule or 0.0


def _tpot_s(e: EndpointReading) -> float:
    """Predicted time per output token with one more request (0 without a curve: unknown)."""
    return e.curve.tpot_s_at(_load(e) + 1.0) if e.curve is not None else 0.0


def _load(e: EndpointReading) -> float:
    """Requests at the server now: as read, plus this router's since."""
    return max((e.running or 0.0) + (e.waiting or 0.0) + e.added_since_reading, 0.0)


def _capacity(e: EndpointReading, settings: RoutingSettings) -> float:
    """Requests its batch admits: a queueing server's batch was full at what it ran."""
    running = e.running or 0.0
    if (e.waiting or 0.0) > 0:
        return running
    usage = e.kv_cache_usage
    if usage is not None and usage > 0 and running > 0:
        return min(float(settings.max_batch), running * settings.kv_cache_limit / usage)
    return float(settings.max_batch)


def _fill(e: EndpointReading, settings: RoutingSettings) -> float:
    return _load(e) / max(_capacity(e, settings), 1.0)


def _queue(e: EndpointReading, settings: RoutingSettings) -> float:
    """Requests ahead of a new one beyond the batch, per request the batch holds: the wait in
    units of one batch's turn."""
    capacity = max(_capacity(e, settings), 1.0)
    return max(_load(e) + 1.0 - capacity, 0.0) / capacity


def _rendezvous(key: str, name: str) -> int:
    """Highest-random-weight hashing: a session keeps its endpoint while that one stays, and
    losing one endpoint moves only its own sessions. Stable across processes (not `hash`)."""
    digest = hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _tie(key: str | None, name: str) -> tuple[int, str]:
    """Ties go to the session's favourite (sticky) or, without a session, by name."""
    return (-_rendezvous(key, name) if key is not None else 0, name)
