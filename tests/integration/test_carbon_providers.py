"""Carbon sources against real local HTTP servers answering the providers' documented payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from climatik.domain.carbon import CarbonSignal
from climatik.sources.carbon import CarbonSourceError, Freshness, ResilientCarbonSource
from climatik.sources.carbon.electricitymaps import ElectricityMapsSource
from climatik.sources.carbon.static import StaticCarbonSource
from climatik.sources.carbon.uk import UKNationalGridSource
from climatik.sources.carbon.watttime import WattTimeSource
from tests.integration.helpers.carbon_servers import Answer, provider_server

NOW = datetime(2026, 11, 29, 12, 10, tzinfo=UTC)


def uk_slot(start: str, end: str, forecast: float, actual: float | None) -> dict[str, object]:
    return {
        "from": start,
        "to": end,
        "intensity": {"forecast": forecast, "actual": actual, "index": "moderate"},
    }


UK_NATIONAL = {"data": [uk_slot("2026-11-29T12:00Z", "2026-11-29T12:30Z", 266, None)]}
UK_REGIONAL = {
    "data": [
        {
            "regionid": 13,
            "dnoregion": "UK Power Networks",
            "shortname": "London",
            "data": [
                {
                    "from": "2026-11-29T12:00Z",
                    "to": "2026-11-29T12:30Z",
                    "intensity": {"forecast": 180, "index": "moderate"},
                    "generationmix": [{"fuel": "gas", "perc": 40.1}, {"fuel": "wind", "perc": 30}],
                }
            ],
        }
    ]
}
UK_REGIONAL_FW24H = {
    "data": {
        "regionid": 13,
        "shortname": "London",
        "data": [
            {
                "from": f"2026-11-29T{12 + i // 2:02d}:{30 * (i % 2):02d}Z",
                "to": f"2026-11-29T{12 + (i + 1) // 2:02d}:{30 * ((i + 1) % 2):02d}Z",
                "intensity": {"forecast": 100 + 10 * i, "index": "low"},
                "generationmix": [],
            }
            for i in range(4)
        ],
    }
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_uk_national_uses_forecast_while_actual_is_null(
    session: aiohttp.ClientSession,
) -> None:
    async with provider_server({"/intensity": Answer(UK_NATIONAL)}) as server:
        reading = await UKNationalGridSource(session, base_url=server.url).current(NOW)
    assert reading.intensity_g_per_kwh == 266
    assert reading.is_forecast
    assert reading.signal is CarbonSignal.AVERAGE
    assert reading.slot_start == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert reading.slot_end == datetime(2026, 11, 29, 12, 30, tzinfo=UTC)


async def test_uk_national_prefers_the_measured_actual(session: aiohttp.ClientSession) -> None:
    measured = {"data": [uk_slot("2026-11-29T12:00Z", "2026-11-29T12:30Z", 266, 263)]}
    async with provider_server({"/intensity": Answer(measured)}) as server:
        reading = await UKNationalGridSource(session, base_url=server.url).current(NOW)
    assert reading.intensity_g_per_kwh == 263
    assert not reading.is_forecast


async def test_uk_region_and_postcode_unwrap_the_regional_nesting(
    session: aiohttp.ClientSession,
) -> None:
    routes = {
        "/regional/regionid/13": Answer(UK_REGIONAL),
        "/regional/postcode/RG10": Answer(UK_REGIONAL),
    }
    async with provider_server(routes) as server:
        by_region = await UKNationalGridSource(session, base_url=server.url, region_id=13).current(
            NOW
        )
        by_postcode = await UKNationalGridSource(
            session, base_url=server.url, postcode="RG10"
        ).current(NOW)
    assert by_region.intensity_g_per_kwh == by_postcode.intensity_g_per_kwh == 180
    assert by_region.region == "uk-national-grid/region-13"


async def test_uk_regional_forecast_is_an_object_not_a_list(session: aiohttp.ClientSession) -> None:
    path = "/regional/intensity/2026-11-29T12:10Z/fw24h/regionid/13"
    async with provider_server({path: Answer(UK_REGIONAL_FW24H)}) as server:
        slots = await UKNationalGridSource(session, base_url=server.url, region_id=13).forecast(NOW)
    assert [s.intensity_g_per_kwh for s in slots] == [100, 110, 120, 130]
    assert all(s.is_forecast for s in slots)


async def test_electricitymaps_sends_the_key_and_parses_latest_and_forecast(
    session: aiohttp.ClientSession,
) -> None:
    latest = {
        "zone": "DE",
        "carbonIntensity": 302,
        "datetime": "2026-11-29T12:00:00.000Z",
        "updatedAt": "2026-11-29T11:52:09.000Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
    }
    forecast = {
        "zone": "DE",
        "forecast": [
            {"carbonIntensity": 77, "datetime": "2026-11-29T13:00:00.000Z"},
            {"carbonIntensity": 88, "datetime": "2026-11-29T14:00:00.000Z"},
        ],
        "updatedAt": "2026-11-29T11:52:09.000Z",
    }
    routes = {
        "/v3/carbon-intensity/latest": Answer(latest),
        "/v3/carbon-intensity/forecast": Answer(forecast),
    }
    async with provider_server(routes) as server:
        source = ElectricityMapsSource(session, zone="DE", api_key="s3cret", base_url=server.url)
        reading = await source.current(NOW)
        slots = await source.forecast(NOW)
        headers = [request.headers.get("auth-token") for request in server.requests]
        zones = [request.query.get("zone") for request in server.requests]
    assert reading.intensity_g_per_kwh == 302
    assert not reading.is_forecast
    assert [s.intensity_g_per_kwh for s in slots] == [77, 88]
    assert headers == ["s3cret", "s3cret"]
    assert zones == ["DE", "DE"]
    assert "s3cret" not in repr(source)


def watttime_forecast(values: list[float]) -> dict[str, object]:
    return {
        "data": [
            {"point_time": f"2026-11-29T12:{10 + 5 * i:02d}:00+00:00", "value": v}
            for i, v in enumerate(values)
        ],
        "meta": {"units": "lbs_co2_per_mwh", "signal_type": "co2_moer", "region": "CAISO_NORTH"},
    }


async def test_watttime_converts_marginal_lbs_per_mwh_and_refreshes_an_expired_token(
    session: aiohttp.ClientSession,
) -> None:
    clock = [NOW]
    routes = {
        "/login": Answer({"token": "tok"}),
        "/v3/forecast": Answer(watttime_forecast([1000.0, 800.0])),
    }
    async with provider_server(routes) as server:
        source = WattTimeSource(
            session,
            region="CAISO_NORTH",
            username="u",
            password="p",
            clock=lambda: clock[0],
            base_url=server.url,
        )
        reading = await source.current(NOW)
        await source.current(NOW)  # the token is still fresh: no second login
        logins_while_fresh = server.hits("/login")
        # WattTime revokes the token early: 401, then our client logs in again once.
        server.script("/v3/forecast", Answer({"error": "expired"}, status=401))
        again = await source.current(NOW)
        logins_after_401 = server.hits("/login")
        clock[0] = NOW + timedelta(minutes=31)  # past the token's lifetime
        await source.current(NOW)
        bearer = server.requests[-1].headers.get("Authorization")
        basic = next(r for r in server.requests if r.path == "/login").headers["Authorization"]
    assert reading.signal is CarbonSignal.MARGINAL
    assert reading.intensity_g_per_kwh == pytest.approx(453.59237)
    assert again.intensity_g_per_kwh == pytest.approx(453.59237)
    assert (logins_while_fresh, logins_after_401, server.hits("/login")) == (1, 2, 3)
    assert bearer == "Bearer tok"
    assert basic.startswith("Basic ")


async def test_rate_limit_then_success_is_retried(session: aiohttp.ClientSession) -> None:
    async with provider_server({"/intensity": Answer(UK_NATIONAL)}) as server:
        server.script(
            "/intensity", Answer({"error": "slow down"}, status=429, headers={"Retry-After": "0"})
        )
        reading = await UKNationalGridSource(session, base_url=server.url).current(NOW)
        assert server.hits("/intensity") == 2
    assert reading.intensity_g_per_kwh == 266


async def test_persistent_server_error_is_a_provider_error(session: aiohttp.ClientSession) -> None:
    async with provider_server({"/intensity": Answer({"error": "boom"}, status=500)}) as server:
        with pytest.raises(CarbonSourceError) as caught:
            await UKNationalGridSource(session, base_url=server.url).current(NOW)
        assert server.hits("/intensity") == 3  # the first try and two retries
    assert caught.value.reason == "ProviderError"
    assert "HTTP 500" in caught.value.message


async def test_a_slow_answer_beyond_the_timeout_is_a_timeout(
    session: aiohttp.ClientSession,
) -> None:
    async with provider_server({"/intensity": Answer(UK_NATIONAL, delay_s=2)}) as server:
        source = UKNationalGridSource(session, base_url=server.url, timeout_s=0.2)
        with pytest.raises(CarbonSourceError) as caught:
            await source.current(NOW)
    assert caught.value.reason == "Timeout"


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (Answer(raw_body=b"{not json"), "invalid JSON"),
        (Answer({"data": "nope"}), "data: expected list"),
        (
            Answer({"data": [{"from": "2026-11-29T12:00Z", "to": "2026-11-29T12:30Z"}]}),
            "missing 'intensity'",
        ),
        (
            Answer({"data": [uk_slot("2026-11-29T12:00Z", "2026-11-29T12:30Z", -5, None)]}),
            "non-negative",
        ),
        (Answer({"data": [uk_slot("yesterday", "2026-11-29T12:30Z", 5, None)]}), "is not a time"),
    ],
)
async def test_malformed_payloads_name_what_is_wrong(
    session: aiohttp.ClientSession, answer: Answer, fragment: str
) -> None:
    async with provider_server({"/intensity": answer}) as server:
        with pytest.raises(CarbonSourceError) as caught:
            await UKNationalGridSource(session, base_url=server.url).current(NOW)
    assert caught.value.reason == "Malformed"
    assert fragment in caught.value.message


async def test_resilient_source_holds_last_known_good_then_falls_back(
    session: aiohttp.ClientSession,
) -> None:
    async with provider_server({"/intensity": Answer(UK_NATIONAL)}) as server:
        resilient = ResilientCarbonSource(
            UKNationalGridSource(session, base_url=server.url),
            max_age=timedelta(minutes=45),
            fallback_intensity_g_per_kwh=400,
        )
        live = await resilient.current(NOW)
        cached = await resilient.current(NOW + timedelta(minutes=5))
        assert server.hits("/intensity") == 1  # one fetch per slot

        server.set_default("/intensity", Answer({"error": "down"}, status=500))
        stale = await resilient.current(NOW + timedelta(minutes=25))
        fallback = await resilient.current(NOW + timedelta(minutes=60))

        server.set_default(
            "/intensity",
            Answer({"data": [uk_slot("2026-11-29T13:30Z", "2026-11-29T14:00Z", 150, 149)]}),
        )
        recovered = await resilient.current(NOW + timedelta(minutes=90))
    assert live.freshness is Freshness.LIVE
    assert cached is live
    assert stale.freshness is Freshness.LAST_KNOWN_GOOD
    assert stale.reading.intensity_g_per_kwh == 266
    assert stale.error is not None
    assert "HTTP 500" in stale.error.message
    assert fallback.freshness is Freshness.FALLBACK
    assert fallback.reading.intensity_g_per_kwh == 400
    assert recovered.freshness is Freshness.LIVE
    assert recovered.reading.intensity_g_per_kwh == 149


async def test_resilient_source_without_fallback_raises_after_max_age(
    session: aiohttp.ClientSession,
) -> None:
    async with provider_server({"/intensity": Answer({"error": "down"}, status=503)}) as server:
        resilient = ResilientCarbonSource(
            UKNationalGridSource(session, base_url=server.url), max_age=timedelta(minutes=5)
        )
        with pytest.raises(CarbonSourceError):
            await resilient.current(NOW)


async def test_static_series_repeats_and_constant_is_constant(tmp_path: Path) -> None:
    series = tmp_path / "day.csv"
    series.write_text("start,intensity_g_per_kwh\n2026-11-28T00:00Z,100\n2026-11-28T12:00Z,300\n")
    source = StaticCarbonSource.from_csv(series)
    midday = await source.current(datetime(2026, 12, 3, 13, 0, tzinfo=UTC))
    night = await source.current(datetime(2026, 12, 3, 1, 0, tzinfo=UTC))
    assert (midday.intensity_g_per_kwh, night.intensity_g_per_kwh) == (300, 100)
    assert len(await source.forecast(NOW)) == 3
    constant = StaticCarbonSource.constant(215)
    assert (await constant.current(NOW)).intensity_g_per_kwh == 215
