"""The carbon reconciler when the API key's Secret cannot be read or changes, and its series.

The Kubernetes side is an in-memory client that answers the Secret `get` (or fails it as told)
and applies status merge patches to the cached object, so the next reconcile sees what the last
one wrote. The provider side is Static (no HTTP), a closed local port, or the real local HTTP
server the integration tests use, answering like Electricity Maps. The dev-cluster tests
(tests/integration/test_carbon_secrets.py) run the same reconciler against the real API server.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from climatik.api.status import apply_merge_patch
from climatik.kube.client import ApiError
from climatik.kube.resources import Resource
from climatik.kube.store import Store, thaw
from climatik.reconcilers.carbon import CarbonReconciler
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.result import Result
from climatik.reconcilers.settings import CarbonSettings
from tests.integration.helpers.carbon_servers import Answer, ProviderServer, provider_server
from tests.unit.helpers.status_world import RecordedEvents

NS = "llm"
KEY = f"{NS}/cap"
API_KEY = "em-key-0123456789"
NOW = datetime(2026, 11, 29, 12, 10, tzinfo=UTC)


class Cluster:
    """Configs in a store, Secrets by name, and errors to answer instead of a Secret."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.store = Store({})
        self.store.upsert(config)
        self.secrets: dict[str, dict[str, Any]] = {}
        self.secret_error: BaseException | None = None
        self.secret_gets = 0

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Any:
        if resource.plural == "secrets":
            self.secret_gets += 1
            if self.secret_error is not None:
                raise self.secret_error
            if name not in self.secrets:
                raise ApiError(404, {"reason": "NotFound", "message": f'secrets "{name}"'})
            return copy.deepcopy(self.secrets[name])
        found = self.store.get(f"{namespace}/{name}")
        if found is None:
            raise ApiError(404, {"reason": "NotFound"})
        return thaw(found)

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        **_: Any,
    ) -> Any:
        current = self.store.get(f"{namespace}/{name}")
        assert current is not None
        obj: dict[str, Any] = apply_merge_patch(thaw(current), patch)
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        self.store.upsert(obj)
        return obj

    def config(self) -> dict[str, Any]:
        """A mutable copy of the cached config."""
        cached = self.store.get(KEY)
        assert cached is not None
        obj: dict[str, Any] = thaw(cached)
        return obj

    def carbon_condition(self) -> dict[str, Any]:
        for item in self.config().get("status", {}).get("conditions", ()):
            if item["type"] == "CarbonAvailable":
                return dict(item)
        return {}


def config_object(carbon: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {
            "name": "cap",
            "namespace": NS,
            "generation": 1,
            "resourceVersion": "1",
            "uid": "u-1",
        },
        "spec": {
            "powerCapLimit": 1000,
            "scaleObjectRef": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "metadata": {"name": "llm"},
                }
            ],
            "carbon": carbon,
        },
    }


def electricity_maps(fallback: str = "FloorCap") -> dict[str, Any]:
    return {
        "provider": "ElectricityMaps",
        "zone": "DE",
        "apiKeySecretRef": {"name": "em", "key": "token"},
        "target": {
            "type": "IntensityBand",
            "cleanIntensityGramsPerKWh": 100,
            "dirtyIntensityGramsPerKWh": 400,
        },
        "floorWatts": 400,
        "fallback": fallback,
    }


def watttime() -> dict[str, Any]:
    return {**electricity_maps(), "provider": "WattTime", "region": "CAISO_NORTH", "zone": None}


def secret(value: str, key: str = "token") -> dict[str, Any]:
    return {"metadata": {"name": "em"}, "data": {key: base64.b64encode(value.encode()).decode()}}


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def reconciler(
    cluster: Cluster,
    session: aiohttp.ClientSession,
    clock: Clock,
    registry: CollectorRegistry | None = None,
    electricity_maps_url: str = "http://127.0.0.1:9",
) -> tuple[CarbonReconciler, RecordedEvents, CappingMetrics]:
    events = RecordedEvents()
    metrics = CappingMetrics(registry or CollectorRegistry())

    async def session_factory() -> aiohttp.ClientSession:
        return session

    # By default nothing listens there: a built provider fails fast, "unreachable".
    settings = CarbonSettings(electricity_maps_url=electricity_maps_url, timeout_s=2)
    return (
        CarbonReconciler(
            cluster,  # type: ignore[arg-type]
            configs=cluster,
            events=events,
            metrics=metrics,
            settings=settings,
            session_factory=session_factory,
            clock=clock,
            wall_clock=lambda: NOW,
        ),
        events,
        metrics,
    )


async def retries(rec: CarbonReconciler, clock: Clock, count: int) -> list[float]:
    """Reconcile `count` times, each when the previous result asked to be woken."""
    delays = []
    for _ in range(count):
        result = await rec.reconcile(KEY)
        assert result.requeue_after is not None, "never terminal, never forgotten"
        delays.append(result.requeue_after)
        clock.now_s += result.requeue_after
    return delays


@pytest.mark.parametrize(
    ("error", "transient", "says"),
    [
        (None, False, "does not exist (HTTP 404)"),
        (ApiError(403, {"reason": "Forbidden"}), False, "may not read it (HTTP 403)"),
        (ApiError(500, {"reason": "InternalError"}), True, "HTTP 500 InternalError"),
        (ApiError(503, {"reason": "ServiceUnavailable"}), True, "HTTP 503"),
        (TimeoutError(), True, "timed out"),
        (aiohttp.ClientConnectionError("reset"), True, "unreachable"),
    ],
    ids=["missing", "forbidden", "500", "503", "timeout", "connection"],
)
async def test_an_unreadable_secret_falls_back_reports_once_and_retries_with_growing_delay(
    session: aiohttp.ClientSession,
    error: BaseException | None,
    transient: bool,
    says: str,
) -> None:
    cluster = Cluster(config_object(electricity_maps()))
    cluster.secret_error = error
    clock = Clock()
    registry = CollectorRegistry()
    rec, events, _ = reconciler(cluster, session, clock, registry)

    delays = await retries(rec, clock, 7)

    assert delays == ([2, 4, 8, 16, 32, 60, 60] if transient else [10, 20, 40, 80, 160, 300, 300])
    assert cluster.secret_gets == 7, "one get per retry"
    status = cluster.config()["status"]
    assert status["effectiveCapWatts"] == 400, "FloorCap fallback meanwhile"
    assert status["effectiveCapSource"] == "Carbon"
    found = cluster.carbon_condition()
    assert (found["status"], found["reason"]) == ("False", "SecretUnreadable")
    assert f"Secret {NS}/em, key 'token'" in found["message"]
    assert says in found["message"]
    assert "fallback FloorCap 400 W" in found["message"]
    assert events.reasons().count("CarbonSecretUnreadable") == 1, events.recorded
    assert "CarbonUnavailable" not in events.reasons()
    assert registry.get_sample_value("climatik_carbon_available", {"config": KEY}) == 0


@pytest.mark.parametrize(
    ("stored", "carbon", "says"),
    [
        (secret(API_KEY, key="other"), electricity_maps(), "has no such key"),
        (secret("   "), electricity_maps(), "is empty"),
        ({"data": {"token": "not base64!"}}, electricity_maps(), "not text"),
        (secret("no-colon-here"), watttime(), "`user:password`"),
        (secret("user:"), watttime(), "`user:password`"),
    ],
    ids=["no-such-key", "empty", "not-base64", "watttime-no-colon", "watttime-no-password"],
)
async def test_a_secret_without_a_usable_key_is_reported_without_its_content(
    session: aiohttp.ClientSession, stored: dict[str, Any], carbon: dict[str, Any], says: str
) -> None:
    cluster = Cluster(config_object(carbon))
    cluster.secrets["em"] = stored
    clock = Clock()
    rec, events, _ = reconciler(cluster, session, clock)

    assert await retries(rec, clock, 3) == [10, 20, 40]
    found = cluster.carbon_condition()
    assert found["reason"] == "SecretUnreadable"
    assert says in found["message"]
    for text in ("no-colon-here", "not base64!"):
        assert text not in found["message"]
        assert all(text not in message for _, _, message in events.recorded)
    assert events.reasons().count("CarbonSecretUnreadable") == 1


async def test_the_secret_created_later_is_used_at_the_next_retry(
    session: aiohttp.ClientSession,
) -> None:
    cluster = Cluster(config_object(electricity_maps()))
    clock = Clock()
    rec, events, _ = reconciler(cluster, session, clock)
    assert await retries(rec, clock, 2) == [10, 20]

    cluster.secrets["em"] = secret(API_KEY)
    result = await rec.reconcile(KEY)

    # The provider was built and asked: it is unreachable here, which is now what is reported.
    found = cluster.carbon_condition()
    assert (found["status"], found["reason"]) == ("False", "Fallback")
    assert "electricitymaps/DE" in found["message"]
    assert "unreachable" in found["message"]
    assert API_KEY not in found["message"]
    assert result.requeue_after is not None
    assert "CarbonUnavailable" in events.reasons()


async def test_a_new_problem_is_reported_again_and_a_restart_does_not_repeat_one(
    session: aiohttp.ClientSession,
) -> None:
    cluster = Cluster(config_object(electricity_maps()))
    clock = Clock()
    rec, events, _ = reconciler(cluster, session, clock)
    await retries(rec, clock, 2)
    cluster.secret_error = ApiError(403, {"reason": "Forbidden"})
    await retries(rec, clock, 2)
    assert events.reasons().count("CarbonSecretUnreadable") == 2

    restarted, events_after, _ = reconciler(cluster, session, clock)
    await retries(restarted, clock, 2)
    assert events_after.reasons().count("CarbonSecretUnreadable") == 0, "the condition names it"


async def test_the_secret_is_read_again_only_every_refresh_period(
    session: aiohttp.ClientSession,
) -> None:
    cluster = Cluster(config_object(electricity_maps()))
    cluster.secrets["em"] = secret(API_KEY)
    clock = Clock()
    rec, _, _ = reconciler(cluster, session, clock)
    await rec.reconcile(KEY)
    assert cluster.secret_gets == 1
    for _ in range(5):
        clock.now_s += 10
        await rec.reconcile(KEY)
    assert cluster.secret_gets == 1, "within secret_refresh_s (60 s) no second get"
    clock.now_s += 15
    result = await rec.reconcile(KEY)
    assert cluster.secret_gets == 2
    assert result.requeue_after is not None
    assert result.requeue_after <= 60


LATEST = "/v3/carbon-intensity/latest"
OLD_KEY, NEW_KEY = "em-key-old-0001", "em-key-new-0002"


def latest(intensity: float) -> dict[str, Any]:
    """Electricity Maps' answer for an hour already over, so every reconcile asks again."""
    return {
        "zone": "DE",
        "carbonIntensity": intensity,
        "datetime": "2026-11-29T10:00:00.000Z",
        "updatedAt": "2026-11-29T10:52:09.000Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
    }


@pytest.fixture
async def em_server() -> AsyncIterator[ProviderServer]:
    async with provider_server({LATEST: Answer(latest(200))}) as server:
        server.accept_only("auth-token", OLD_KEY)
        yield server


async def live_with_old_key(
    em_server: ProviderServer, session: aiohttp.ClientSession
) -> tuple[Cluster, CarbonReconciler, RecordedEvents, Clock]:
    cluster = Cluster(config_object(electricity_maps()))
    cluster.secrets["em"] = secret(OLD_KEY)
    clock = Clock()
    rec, events, _ = reconciler(cluster, session, clock, electricity_maps_url=em_server.url)
    await rec.reconcile(KEY)
    assert cluster.carbon_condition()["reason"] == "Live"
    assert cluster.config()["status"]["effectiveCapWatts"] == 800
    return cluster, rec, events, clock


async def test_a_refused_key_is_read_again_at_once_and_the_new_one_used(
    em_server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    cluster, rec, events, clock = await live_with_old_key(em_server, session)
    cluster.secrets["em"] = secret(NEW_KEY)
    em_server.accept_only("auth-token", NEW_KEY)
    em_server.set_default(LATEST, Answer(latest(300)))
    clock.now_s += 5  # well within secret_refresh_s: only the 401 makes it read again

    await rec.reconcile(KEY)

    assert cluster.secret_gets == 2
    headers = [r.headers.get("auth-token") for r in em_server.requests]
    assert headers == [OLD_KEY, OLD_KEY, NEW_KEY], "refused once, then asked with the new key"
    found = cluster.carbon_condition()
    assert found["reason"] == "Live"
    assert "300 g/kWh" in found["message"]
    assert cluster.config()["status"]["effectiveCapWatts"] == 600
    assert "CarbonUnavailable" not in events.reasons()
    assert "CarbonSecretUnreadable" not in events.reasons()


async def test_a_rotated_key_is_used_after_the_refresh_period(
    em_server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    cluster, rec, _, clock = await live_with_old_key(em_server, session)
    cluster.secrets["em"] = secret(NEW_KEY)  # the old key still works for a while
    clock.now_s += 30
    await rec.reconcile(KEY)
    assert em_server.requests[-1].headers.get("auth-token") == OLD_KEY
    clock.now_s += 31
    await rec.reconcile(KEY)
    assert em_server.requests[-1].headers.get("auth-token") == NEW_KEY
    assert cluster.secret_gets == 2


async def test_a_refused_key_without_a_secret_holds_the_last_reading_then_recovers(
    em_server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    cluster, rec, events, clock = await live_with_old_key(em_server, session)
    del cluster.secrets["em"]
    em_server.accept_only("auth-token", NEW_KEY)
    clock.now_s += 5
    result = await rec.reconcile(KEY)

    found = cluster.carbon_condition()
    assert (found["status"], found["reason"]) == ("False", "SecretUnreadable")
    assert "does not exist (HTTP 404)" in found["message"]
    assert "(200 g/kWh) holds until" in found["message"]
    assert cluster.config()["status"]["effectiveCapWatts"] == 800, "no fallback blip"
    assert result.requeue_after == 10
    assert events.reasons().count("CarbonSecretUnreadable") == 1

    cluster.secrets["em"] = secret(NEW_KEY)
    clock.now_s += 10
    await rec.reconcile(KEY)
    assert cluster.carbon_condition()["reason"] == "Live"
    assert em_server.requests[-1].headers.get("auth-token") == NEW_KEY


async def test_a_working_key_outlives_its_secret_and_says_so(
    em_server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    cluster, rec, events, clock = await live_with_old_key(em_server, session)
    cluster.secret_error = ApiError(503, {"reason": "ServiceUnavailable"})
    clock.now_s += 61
    await rec.reconcile(KEY)
    assert cluster.secret_gets == 2
    assert "Secret" not in cluster.carbon_condition()["message"], "a blip is only logged"
    assert "CarbonSecretUnreadable" not in events.reasons()

    cluster.secret_error = ApiError(404, {"reason": "NotFound"})
    clock.now_s += 61
    await rec.reconcile(KEY)
    found = cluster.carbon_condition()
    assert found["reason"] == "Live"
    assert "does not exist (HTTP 404)" in found["message"]
    assert "the key read before still works" in found["message"]
    assert events.reasons().count("CarbonSecretUnreadable") == 1


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"config": KEY, **labels})


CARBON_SERIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("climatik_carbon_intensity_grams_per_joule", {"signal": "Average"}),
    ("climatik_effective_cap_watts", {}),
    ("climatik_carbon_available", {}),
)


def static(intensity: float) -> dict[str, Any]:
    return {
        "provider": "Static",
        "staticIntensityGramsPerKWh": intensity,
        "target": {
            "type": "IntensityBand",
            "cleanIntensityGramsPerKWh": 100,
            "dirtyIntensityGramsPerKWh": 400,
        },
        "floorWatts": 400,
    }


async def test_carbon_series_end_with_the_config(session: aiohttp.ClientSession) -> None:
    cluster = Cluster(config_object(static(250)))
    registry = CollectorRegistry()
    clock = Clock()
    rec, _, _ = reconciler(cluster, session, clock, registry)
    await rec.reconcile(KEY)
    for name, labels in CARBON_SERIES:
        assert sample(registry, name, **labels) is not None, name

    cluster.store.delete(KEY)
    assert await rec.reconcile(KEY) == Result()
    for name, labels in CARBON_SERIES:
        assert sample(registry, name, **labels) is None, name
    assert sample(registry, "climatik_emissions_grams_total") is None


async def test_carbon_series_end_with_the_carbon_section(session: aiohttp.ClientSession) -> None:
    measured = config_object(static(250))
    measured["status"] = {"measuredPowerWatts": 500.0}
    cluster = Cluster(measured)
    registry = CollectorRegistry()
    clock = Clock()
    rec, _, _ = reconciler(cluster, session, clock, registry)
    await rec.reconcile(KEY)
    clock.now_s += 60
    await rec.reconcile(KEY)
    # Base units agree: grams = grams per joule x watts x seconds (250 g/kWh, 500 W, 60 s).
    per_joule = sample(registry, "climatik_carbon_intensity_grams_per_joule", signal="Average")
    assert per_joule is not None
    assert per_joule == pytest.approx(250 / 3.6e6)
    assert sample(registry, "climatik_emissions_grams_total") == pytest.approx(per_joule * 500 * 60)

    without = cluster.config()
    del without["spec"]["carbon"]
    without["metadata"]["generation"] = 2
    cluster.store.upsert(without)
    await rec.reconcile(KEY)
    for name, labels in CARBON_SERIES:
        assert sample(registry, name, **labels) is None, name
    assert sample(registry, "climatik_emissions_grams_total") is None
    assert cluster.config()["status"]["effectiveCapSource"] == "Static"


async def test_an_invalid_spec_is_left_to_the_power_cap_reconciler(
    session: aiohttp.ClientSession,
) -> None:
    """The power-cap reconciler reports a spec the controller refuses; the carbon reconciler
    stands aside (no error of its own, no write, its series gone) instead of telling it twice."""
    cluster = Cluster(config_object(static(250)))
    registry = CollectorRegistry()
    rec, events, _ = reconciler(cluster, session, Clock(), registry)
    await rec.reconcile(KEY)
    assert all(sample(registry, name, **labels) is not None for name, labels in CARBON_SERIES)
    written = cluster.config()["status"]
    invalid = cluster.config()
    invalid["spec"]["policy"] = {"holdingThresholdPercent": 250}
    invalid["metadata"]["generation"] = 2
    cluster.store.upsert(invalid)
    events.recorded.clear()
    assert await rec.reconcile(KEY) == Result()
    assert cluster.config()["status"] == written
    assert events.recorded == []
    for name, labels in CARBON_SERIES:
        assert sample(registry, name, **labels) is None, name
