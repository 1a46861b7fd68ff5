"""Scenario files: built-ins load from anywhere, bad fields are named, the CLI explains errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from climatik.cli import main
from climatik.sim.scenario import ScenarioError, builtin_names, load_scenario, parse_scenario

MINIMAL = {
    "name": "tiny",
    "duration_h": 0.5,
    "racks": {"count": 1, "servers_per_rack": 2},
    "caps": {"site_cap_w": 15000},
    "services": [{"name": "chat", "max_replicas": 2, "traffic": {"peak_rps": 2}}],
}


def test_every_builtin_scenario_loads_and_the_required_ones_exist() -> None:
    names = builtin_names()
    for required in ("default", "oversubscribed", "heatwave", "carbon-swing", "large"):
        assert required in names
    for name in names:
        assert load_scenario(name).name == name


def test_large_scenario_has_over_a_thousand_gpus_for_a_week() -> None:
    large = load_scenario("large")
    assert large.racks.servers * large.racks.gpus_per_server >= 1000
    assert large.duration_h >= 7 * 24


def test_default_is_one_day_two_racks_64_gpus_two_services() -> None:
    default = load_scenario("default")
    assert default.duration_h == 24
    assert default.racks.count == 2
    assert default.racks.servers * default.racks.gpus_per_server == 64
    assert len(default.services) == 2


def test_builtins_load_from_any_working_directory(tmp_path: Path) -> None:
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert load_scenario("default").name == "default"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"caps": {"site_cap_w": -5}}, "caps.site_cap_w"),
        (
            {"services": [{"name": "chat", "traffic": {"peak_rps": 0}}]},
            "services.0.traffic.peak_rps",
        ),
        ({"services": [{"name": "chat", "min_replicas": 5, "max_replicas": 2}]}, "services.0"),
        ({"racks": {"count": 1, "gpu_model": "TPU"}}, "racks.gpu_model"),
        ({"policies": ["bogus"]}, "bogus"),
        ({"wattage": 3}, "wattage"),
    ],
)
def test_invalid_fields_are_named(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario({**MINIMAL, **patch}, origin="test.yaml")
    assert field in str(error.value)
    assert "test.yaml" in str(error.value)


def test_a_scenario_file_accepts_every_policy_the_cli_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--list"]) == 0
    listed = next(
        line.removeprefix("policies:").strip()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("policies:")
    )
    policies = [name.strip() for name in listed.split(",")]
    assert {"climatik-no-carbon", "climatik-max-clock", "placement-zone"} <= set(policies)
    path = tmp_path / "all-policies.yaml"
    path.write_text(json.dumps({**MINIMAL, "policies": policies}), encoding="utf-8")
    assert load_scenario(str(path)).policies == policies


def test_an_unknown_policy_in_a_file_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario({**MINIMAL, "policies": ["static", "climatik", "bogus"]})
    message = str(error.value)
    assert "unknown policy 'bogus'" in message
    assert "known: uncapped, static, seed-threshold, climatik, climatik-no-carbon" in message


def test_unknown_scenario_lists_the_builtins() -> None:
    with pytest.raises(ScenarioError, match=r"built-in: .*default"):
        load_scenario("no-such-scenario")


def test_cli_reports_a_bad_scenario_file_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ncaps: {site_cap_w: 0}\nservices: []\n", encoding="utf-8")
    assert main(["simulate", "--scenario", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "caps.site_cap_w" in err
    assert "services" in err
    assert "Traceback" not in err


def test_cli_writes_json_with_the_issue_keys_and_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(json.dumps(MINIMAL), encoding="utf-8")
    out_json = tmp_path / "out.json"
    report = tmp_path / "report"
    status = main(
        [
            "simulate",
            "--scenario",
            str(scenario),
            "--policies",
            "static,climatik",
            "--json",
            str(out_json),
            "--report",
            str(report),
        ]
    )
    assert status == 0
    stdout = capsys.readouterr().out
    assert "climatik" in stdout
    assert "violation W*s" in stdout
    document = json.loads(out_json.read_text(encoding="utf-8"))
    assert document["scenario"] == "tiny"
    assert document["duration_s"] == 1800.0
    assert set(document["policies"]) == {"static", "climatik"}
    assert set(document["policies"]["climatik"]) == {
        "cap_violation_ws",
        "max_overshoot_pct",
        "tokens",
        "tokens_per_s",
        "tokens_per_joule",
        "energy_kwh",
        "cooling_kwh",
        "peak_inlet_c",
        "time_above_redline_s",
        "carbon_g",
        "carbon_g_per_1k_tokens",
        "slo_attainment",
        "peak_to_average",
    }
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "power.png" in page
    for png in ("power.png", "inlets.png", "carbon.png", "replicas-climatik.png"):
        assert (report / png).stat().st_size > 1000


def test_cli_rejects_an_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--hours", "0.1", "--policies", "climatik,nope"]) == 2
    assert "nope" in capsys.readouterr().err
