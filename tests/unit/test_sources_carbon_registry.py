"""The carbon provider registry: every provider the API names is registered, is built from a
config's carbon section through its own module, and says whether it needs a key and which shape.
The reconciler names no provider, so these are the only places a provider's wiring can go wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from climatik.domain.carbon import IntensityBandTarget
from climatik.domain.config import CarbonConfig, CarbonProvider
from climatik.reconcilers.settings import CarbonSettings
from climatik.sources.carbon import (
    PROVIDERS,
    ProviderRequest,
    build_source,
    needs_key,
    provider_definition,
)
from climatik.sources.carbon.electricitymaps import ElectricityMapsSource
from climatik.sources.carbon.static import StaticCarbonSource
from climatik.sources.carbon.uk import UKNationalGridSource
from climatik.sources.carbon.watttime import WattTimeSource

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def carbon(
    provider: CarbonProvider,
    *,
    region_id: int | None = None,
    zone: str | None = None,
    region: str | None = None,
    static_intensity_g_per_kwh: float | None = None,
) -> CarbonConfig:
    return CarbonConfig(
        provider=provider,
        target=IntensityBandTarget(clean_g_per_kwh=100.0, dirty_g_per_kwh=400.0),
        floor_w=0.0,
        region_id=region_id,
        zone=zone,
        region=region,
        static_intensity_g_per_kwh=static_intensity_g_per_kwh,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def request_for(
    config: CarbonConfig, session: aiohttp.ClientSession, *, key: str | None = None
) -> ProviderRequest:
    async def open_session() -> aiohttp.ClientSession:
        return session

    settings = CarbonSettings()
    return ProviderRequest(
        carbon=config,
        session=open_session,
        wall_clock=lambda: NOW,
        timeout_s=settings.timeout_s,
        base_url=settings.base_url(config.provider),
        key=key,
    )


def test_every_provider_of_the_api_is_registered() -> None:
    assert set(PROVIDERS) == set(CarbonProvider)


def test_the_keyed_providers_are_those_the_crd_asks_a_secret_for() -> None:
    # api/models.py's CEL rule: apiKeySecretRef is required for ElectricityMaps and WattTime.
    keyed = {p for p in CarbonProvider if needs_key(p)}
    assert keyed == {CarbonProvider.ELECTRICITY_MAPS, CarbonProvider.WATT_TIME}


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("user:secret", None),
        ("user:pa:ss", None),
        ("no-colon", "WattTime needs `user:password` there (user, one ':', password)"),
        (":secret", "WattTime needs `user:password` there (user, one ':', password)"),
        ("user:", "WattTime needs `user:password` there (user, one ':', password)"),
    ],
)
def test_watttime_checks_the_key_shape_others_take_any_key(key: str, problem: str | None) -> None:
    assert provider_definition(CarbonProvider.WATT_TIME).key_problem(key) == problem
    assert provider_definition(CarbonProvider.ELECTRICITY_MAPS).key_problem(key) is None


async def test_each_provider_is_built_from_its_spec_fields(
    session: aiohttp.ClientSession,
) -> None:
    uk = await build_source(
        request_for(carbon(CarbonProvider.UK_NATIONAL_GRID, region_id=13), session)
    )
    assert isinstance(uk, UKNationalGridSource)
    assert uk.name == "uk-national-grid/region-13"

    em = await build_source(
        request_for(carbon(CarbonProvider.ELECTRICITY_MAPS, zone="DE"), session, key="k")
    )
    assert isinstance(em, ElectricityMapsSource)
    assert em.name == "electricitymaps/DE"

    wt = await build_source(
        request_for(carbon(CarbonProvider.WATT_TIME, region="CAISO_NORTH"), session, key="u:p")
    )
    assert isinstance(wt, WattTimeSource)
    assert wt.name == "watttime/CAISO_NORTH"

    fixed = await build_source(
        request_for(carbon(CarbonProvider.STATIC, static_intensity_g_per_kwh=250.0), session)
    )
    assert isinstance(fixed, StaticCarbonSource)
    assert (await fixed.current(NOW)).intensity_g_per_kwh == 250.0


async def test_a_keyed_provider_without_a_key_is_refused(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="needs an API key"):
        await build_source(request_for(carbon(CarbonProvider.ELECTRICITY_MAPS, zone="DE"), session))


async def test_static_never_opens_the_session() -> None:
    opened: list[bool] = []

    async def open_session() -> aiohttp.ClientSession:
        opened.append(True)
        raise AssertionError("Static needs no HTTP")

    request = ProviderRequest(
        carbon=carbon(CarbonProvider.STATIC, static_intensity_g_per_kwh=90.0),
        session=open_session,
        wall_clock=lambda: NOW,
        timeout_s=1.0,
    )
    assert isinstance(await build_source(request), StaticCarbonSource)
    assert opened == []


def test_provider_urls_keep_their_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIMATIK_CARBON__UK_NATIONAL_GRID_URL", "http://uk.test")
    monkeypatch.setenv("CLIMATIK_CARBON__ELECTRICITY_MAPS_URL", "http://em.test")
    monkeypatch.setenv("CLIMATIK_CARBON__WATTTIME_URL", "http://wt.test")
    settings = CarbonSettings()
    assert settings.base_url(CarbonProvider.UK_NATIONAL_GRID) == "http://uk.test"
    assert settings.base_url(CarbonProvider.ELECTRICITY_MAPS) == "http://em.test"
    assert settings.base_url(CarbonProvider.WATT_TIME) == "http://wt.test"
    assert settings.base_url(CarbonProvider.STATIC) is None
