"""Settings come from CLIMATIK_* variables with nested groups; bad timing is refused early."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from climatik.runtime.settings import (
    RuntimeSettings,
    SettingsError,
    load_controller_settings,
    load_settings,
)


def test_defaults_are_client_go_values(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RuntimeSettings()
    le = settings.leader_election
    assert (le.lease_duration_s, le.renew_deadline_s, le.retry_period_s, le.jitter) == (
        15.0,
        10.0,
        2.0,
        1.2,
    )
    assert settings.kube.watch_inactivity_timeout_s == 90.0
    assert le.identity  # hostname_random
    assert RuntimeSettings().leader_election.identity != le.identity


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIMATIK_LEADER_ELECTION__LEASE_DURATION_S", "30")
    monkeypatch.setenv("CLIMATIK_HTTP__PORT", "9090")
    monkeypatch.setenv("CLIMATIK_KUBE__NAMESPACE", "prod")
    monkeypatch.setenv("CLIMATIK_EXTRA_CONTROLLERS", '["pkg.mod:factory"]')
    settings = RuntimeSettings()
    assert settings.leader_election.lease_duration_s == 30
    assert settings.http.port == 9090
    assert settings.kube.namespace == "prod"
    assert settings.lease_namespace() == "prod"
    assert settings.extra_controllers == ["pkg.mod:factory"]


def test_a_renew_deadline_longer_than_the_lease_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIMATIK_LEADER_ELECTION__RENEW_DEADLINE_S", "20")
    with pytest.raises(ValidationError, match="lease_duration_s > renew_deadline_s"):
        RuntimeSettings()


def test_a_bad_variable_is_refused_by_its_name_with_what_it_expects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_HTTP__PORT", "99999")
    monkeypatch.setenv("CLIMATIK_LOGGING__LEVEL", "loud")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "CLIMATIK_HTTP__PORT='99999': Input should be less than or equal to 65535; "
        "CLIMATIK_LOGGING__LEVEL='loud': Input should be 'debug', 'info', 'warning' or 'error' "
        "(see `CLIMATIK_*` in docs/configuration.md)"
    )


def test_a_check_across_a_group_names_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIMATIK_LEADER_ELECTION__RENEW_DEADLINE_S", "20")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "CLIMATIK_LEADER_ELECTION__*: need lease_duration_s > renew_deadline_s > "
        "retry_period_s * jitter (see `CLIMATIK_*` in docs/configuration.md)"
    )


def test_flags_override_one_field_and_keep_the_rest_of_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_HTTP__HOST", "127.0.0.1")
    monkeypatch.setenv("CLIMATIK_HTTP__PORT", "9090")
    settings = load_settings(http={"port": 9191})
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9191)


def test_controller_settings_keep_their_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # The names are documented (docs/configuration.md) and set by deploy/ and the Helm chart.
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "7")
    monkeypatch.setenv("CLIMATIK_CARBON__WATTTIME_URL", "http://wt.test")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__APPLY_NAMESPACES", '["old"]')
    monkeypatch.setenv("CLIMATIK_PLACEMENT__WORKERS", "5")
    settings = load_controller_settings()
    assert settings.capping.interval_s == 7.0
    assert settings.carbon.watttime_url == "http://wt.test"
    assert settings.gpu_tuning.allowed_namespaces == ["old"]
    assert settings.placement.workers == 5


def test_connect_to_rules_are_read_and_a_bad_one_is_refused_by_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_OUTBOUND__CONNECT_TO", '["p.monitoring.svc:9090:127.0.0.1:4000"]')
    [rule] = load_controller_settings().outbound.rules()
    assert (rule.host, rule.port, rule.to_host, rule.to_port) == (
        "p.monitoring.svc",
        9090,
        "127.0.0.1",
        4000,
    )
    monkeypatch.setenv("CLIMATIK_OUTBOUND__CONNECT_TO", '["p.monitoring.svc:9090"]')
    with pytest.raises(SettingsError, match=r"CLIMATIK_OUTBOUND__CONNECT_TO.*HOST:PORT:TO_HOST"):
        load_controller_settings()


def test_a_bad_controller_variable_is_refused_at_start_by_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_CAPPING__WORKERS", "0")
    monkeypatch.setenv("CLIMATIK_CARBON__TIMEOUT_S", "soon")
    with pytest.raises(SettingsError) as error:
        load_controller_settings()
    assert str(error.value) == (
        "CLIMATIK_CAPPING__WORKERS='0': Input should be greater than or equal to 1; "
        "CLIMATIK_CARBON__TIMEOUT_S='soon': Input should be a valid number, unable to parse "
        "string as a number (see `CLIMATIK_*` in docs/configuration.md)"
    )
