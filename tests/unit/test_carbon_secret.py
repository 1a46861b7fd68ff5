"""Reading a carbon provider's key from its Secret: what is kept, and how often it is retried."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.carbon import CarbonReading, IntensityBandTarget
from climatik.domain.config import CarbonConfig, CarbonProvider, SecretKeyRef
from climatik.kube.json import JsonDict
from climatik.reconcilers.carbon_secret import (
    credential_from_secret,
    retry_delay_s,
    unreadable_from_status,
)
from climatik.sources.carbon import CarbonSourceError, Freshness, ResilientCarbonSource
from climatik.sources.carbon.static import StaticCarbonSource

CARBON = CarbonConfig(
    provider=CarbonProvider.ELECTRICITY_MAPS,
    target=IntensityBandTarget(100, 400),
    floor_w=400,
    zone="DE",
    api_key_secret=SecretKeyRef("em", "token"),
)


def stored(value: str) -> JsonDict:
    return {"data": {"token": base64.b64encode(value.encode()).decode()}}


def test_the_credential_keeps_a_digest_and_never_shows_the_key() -> None:
    first = credential_from_secret(stored("key-one\n"), CARBON, "llm")
    assert first.value == "key-one"
    assert "key-one" not in repr(first)
    assert first.digest in repr(first)
    assert credential_from_secret(stored("key-one"), CARBON, "llm").digest == first.digest
    assert credential_from_secret(stored("key-two"), CARBON, "llm").digest != first.digest


@pytest.mark.parametrize(
    ("status", "transient"),
    [(404, False), (403, False), (401, False), (400, False), (429, True), (500, True), (503, True)],
)
def test_api_errors_say_what_to_do_and_whether_they_may_pass(status: int, transient: bool) -> None:
    problem = unreadable_from_status(CARBON, "llm", status, "Reason")
    assert problem.transient is transient
    assert problem.message.startswith("Secret llm/em, key 'token': ")
    assert f"HTTP {status}" in problem.message


def test_retry_delays_double_to_their_cap_and_transient_causes_retry_sooner() -> None:
    slow = [retry_delay_s(n, transient=False, first_s=10, max_s=300) for n in range(1, 8)]
    fast = [retry_delay_s(n, transient=True, first_s=10, max_s=300) for n in range(1, 8)]
    assert slow == [10, 20, 40, 80, 160, 300, 300]
    assert fast == [2, 4, 8, 16, 32, 60, 60]


@given(st.integers(min_value=1, max_value=10_000), st.booleans())
def test_retry_delay_never_exceeds_its_cap(failures: int, transient: bool) -> None:
    delay = retry_delay_s(failures, transient=transient, first_s=10, max_s=300)
    assert 0 < delay <= 300


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Refusing:
    """A provider whose key was revoked."""

    name = "electricitymaps/DE"

    def __init__(self) -> None:
        self.calls = 0

    async def current(self, now: datetime) -> CarbonReading:
        self.calls += 1
        raise CarbonSourceError("Unauthorized", "refused the credentials (HTTP 401)")

    async def forecast(self, now: datetime) -> list[CarbonReading]:
        return []


async def test_a_replaced_source_is_asked_at_once_and_the_last_good_reading_is_kept() -> None:
    refusing = Refusing()
    source = ResilientCarbonSource(StaticCarbonSource.constant(250), max_age=timedelta(hours=1))
    await source.current(NOW)  # a good reading of the slot 12:00-12:30
    source.replace_source(refusing)

    later = NOW + timedelta(minutes=31)  # the slot ended: ask the (now refusing) provider
    held = await source.current(later)
    assert refusing.calls == 1
    assert source.failed_at == later
    assert held.freshness is Freshness.LAST_KNOWN_GOOD
    assert held.reading.intensity_g_per_kwh == 250

    await source.current(later + timedelta(seconds=1))
    assert refusing.calls == 1, "backing off after the failure"
    source.replace_source(StaticCarbonSource.constant(300))
    fresh = await source.current(later + timedelta(seconds=2))
    assert fresh.freshness is Freshness.LIVE, "a rebuilt provider is asked at once"
    assert fresh.reading.intensity_g_per_kwh == 300
    assert source.failed_at is None
