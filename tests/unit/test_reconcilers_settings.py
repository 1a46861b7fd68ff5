"""The Prometheus host allow-list has one name, `allowed_hosts`, in capping and placement; the
old capping variable `CLIMATIK_CAPPING__ALLOWED_PROMETHEUS_HOSTS` is read for one release while
the new one is empty, and the controller says so at start-up."""

from __future__ import annotations

import aiohttp
import pytest
import structlog

from climatik.kube.client import KubeClient
from climatik.reconcilers.powercap_measure import prometheus_pool
from climatik.reconcilers.settings import CappingSettings, PlacementSettings
from climatik.runtime.capping import power_cap_controller
from climatik.runtime.manager import Manager
from climatik.runtime.settings import KubeSettings, LeaderElectionSettings, RuntimeSettings
from climatik.sources.power_queries import TokensQueryConfig, build_grouped_tokens_query
from climatik.sources.prometheus import PrometheusSettings

NEW = "CLIMATIK_CAPPING__ALLOWED_HOSTS"
OLD = "CLIMATIK_CAPPING__ALLOWED_PROMETHEUS_HOSTS"


def test_capping_and_placement_name_the_allow_list_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NEW, '["prom.monitoring"]')
    monkeypatch.setenv("CLIMATIK_PLACEMENT__ALLOWED_HOSTS", '["bms.example"]')
    assert CappingSettings().allowed_hosts == ["prom.monitoring"]
    assert PlacementSettings().allowed_hosts == ["bms.example"]


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        (None, None, []),
        (None, '["prom"]', ["prom"]),  # a release-old installation
        ("[]", '["prom"]', ["prom"]),  # an overlay patching the old name onto the new base
        ('["thanos"]', '["prom"]', ["thanos"]),  # the new name wins
    ],
)
def test_the_deprecated_name_is_read_while_the_new_one_is_empty(
    new: str | None, old: str | None, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ((NEW, new), (OLD, old)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    settings = CappingSettings()
    assert settings.allowed_hosts == expected


def test_the_deprecated_name_is_logged_when_the_controller_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(NEW, raising=False)
    monkeypatch.setenv(OLD, '["prom"]')
    manager = Manager(
        RuntimeSettings(kube=KubeSettings(), leader_election=LeaderElectionSettings(enabled=False)),
        KubeClient(api_client=None),
        install_signal_handlers=False,
    )
    with structlog.testing.capture_logs() as logs:
        manager.add_controller(power_cap_controller)
    (deprecated,) = [e for e in logs if e["event"] == "deprecated_setting"]
    assert deprecated["setting"] == OLD
    assert deprecated["use"] == NEW
    assert deprecated["allowed_hosts"] == ["prom"]


def test_the_tokens_rate_window_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CappingSettings().tokens_window_s is None  # rate(...[5m]), as ever
    monkeypatch.setenv("CLIMATIK_CAPPING__TOKENS_WINDOW_S", "3")
    window = CappingSettings().tokens_window_s
    assert window == 3.0
    query = build_grouped_tokens_query(TokensQueryConfig(window=f"{window:g}s"))
    assert query is not None
    assert "[3s]" in query.promql
    monkeypatch.setenv("CLIMATIK_CAPPING__TOKENS_WINDOW_S", "1")
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        CappingSettings()


@pytest.mark.parametrize(
    ("interval_s", "ttl_s", "kept_s"),
    [
        (15.0, 5.0, 5.0),  # the defaults: a third of the interval is more than the TTL
        (3.0, 5.0, 1.0),  # a demo's compressed interval: the TTL follows it
        (3.0, 0.0, 0.0),  # no keeping stays no keeping
    ],
)
def test_an_answer_is_kept_at_most_a_third_of_the_control_interval(
    interval_s: float, ttl_s: float, kept_s: float
) -> None:
    """A kept answer is handed over for up to two TTLs: any longer than a third of the
    interval and a round decides on the reading of the round before."""
    settings = CappingSettings(interval_s=interval_s, prometheus_cache_ttl_s=ttl_s)

    async def no_session() -> aiohttp.ClientSession:
        raise AssertionError("building the pool opens no session")

    pool = prometheus_pool(settings, no_session)
    assert pool.ttl_s(PrometheusSettings(max_sample_age_s=None)) == pytest.approx(kept_s)
