"""The watch state machine: resume versions, 410 handling, silence detection and backoff."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from climatik.kube.watchstate import Next, WatchSettings, WatchState
from tests.unit.fakeclock import FakeClock


def _obj(rv: str) -> dict[str, object]:
    return {"metadata": {"name": "a", "resourceVersion": rv}}


def test_starts_needing_a_list_and_resumes_from_its_version() -> None:
    state = WatchState(clock=FakeClock())
    assert (state.needs_relist, state.resource_version) == (True, None)
    state.list_completed("100")
    assert not state.needs_relist
    assert state.resource_version == "100"


def test_events_and_bookmarks_advance_the_version() -> None:
    state = WatchState(clock=FakeClock())
    state.list_completed("100")
    assert state.event_received("MODIFIED", _obj("101")) is Next.DELIVER
    assert state.resource_version == "101"
    assert state.event_received("BOOKMARK", _obj("150")) is Next.SKIP
    assert state.resource_version == "150"


def test_gone_error_event_forgets_version_and_asks_for_relist() -> None:
    state = WatchState(clock=FakeClock())
    state.list_completed("100")
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    assert state.event_received("ERROR", status) is Next.RELIST
    assert state.needs_relist
    assert state.resource_version is None


def test_other_error_event_reconnects_without_relist() -> None:
    state = WatchState(clock=FakeClock())
    state.list_completed("100")
    status = {"kind": "Status", "code": 500, "reason": "InternalError"}
    assert state.event_received("ERROR", status) is Next.RECONNECT
    assert not state.needs_relist
    assert state.resource_version == "100"


def test_silence_is_measured_from_the_last_event() -> None:
    clock = FakeClock()
    state = WatchState(WatchSettings(inactivity_timeout_s=90), clock=clock)
    state.list_completed("1")
    state.watch_opened()
    clock.advance(89)
    assert not state.is_silent()
    state.event_received("BOOKMARK", _obj("2"))
    clock.advance(89)
    assert not state.is_silent()
    assert state.seconds_until_silent() == 1
    clock.advance(1)
    assert state.is_silent()


def test_backoff_doubles_from_0_8_to_30_seconds_without_jitter() -> None:
    state = WatchState(WatchSettings(backoff_jitter=0.0), clock=FakeClock())
    delays = [state.failed() for _ in range(8)]
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]


def test_backoff_resets_after_a_quiet_period() -> None:
    clock = FakeClock()
    state = WatchState(WatchSettings(backoff_jitter=0.0, backoff_reset_s=120), clock=clock)
    state.failed()
    state.failed()
    clock.advance(121)
    state.succeeded()
    assert state.failed() == 0.8


def test_success_soon_after_failure_keeps_backing_off() -> None:
    clock = FakeClock()
    state = WatchState(WatchSettings(backoff_jitter=0.0), clock=clock)
    state.failed()
    clock.advance(1)
    state.succeeded()
    assert state.failed() == 1.6


@given(failures=st.integers(1, 20), seed=st.integers(0, 2**32))
def test_jittered_backoff_stays_within_base_and_double_base(failures: int, seed: int) -> None:
    state = WatchState(clock=FakeClock(), rng=random.Random(seed))
    for attempt in range(failures):
        base = min(0.8 * 2**attempt, 30.0)
        delay = state.failed()
        assert base <= delay <= 2 * base


@given(seed=st.integers(0, 2**32))
def test_server_timeout_is_between_five_and_ten_minutes(seed: int) -> None:
    state = WatchState(clock=FakeClock(), rng=random.Random(seed))
    assert 300 <= state.server_timeout_s() <= 600
