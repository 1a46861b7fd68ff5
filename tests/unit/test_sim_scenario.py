"""Scenario files: built-ins load from anywhere, bad fields are named, the CLI explains errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from climatik.cli import main
from climatik.domain.paths import field_path
from climatik.sim.policy_specs import POLICY_NAMES
from climatik.sim.scenario import (
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_scenario,
)

MINIMAL = {
    "name": "tiny",
    "duration_h": 0.5,
    "racks": {"count": 1, "servers_per_rack": 2},
    "caps": {"site_cap_w": 15000},
    "services": [{"name": "chat", "max_replicas": 2, "traffic": {"peak_rps": 2}}],
}


def test_every_builtin_scenario_loads_and_the_required_ones_exist() -> None:
    names = builtin_names()
    for required in (
        "default",
        "oversubscribed",
        "heatwave",
        "carbon-swing",
        "large",
        "over-demand",
    ):
        assert required in names
    for name in names:
        assert load_scenario(name).name == name


def test_large_scenario_has_over_a_thousand_gpus_for_a_week() -> None:
    large = load_scenario("large")
    assert large.racks.servers * large.racks.gpus_per_server >= 1000
    assert large.duration_h >= 7 * 24


def test_over_demand_has_three_priority_tiers_of_different_efficiency() -> None:
    scenario = load_scenario("over-demand")
    priorities = [s.priority for s in scenario.services]
    assert sorted(priorities) == [0, 1, 2]
    # The tiers differ in tokens per joule: a small model, long prompts, plain chat.
    assert len({(s.model, s.prompt_tokens, s.output_tokens) for s in scenario.services}) == 3


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


def _errors(patch: dict[str, object]) -> list[str]:
    """The error lines of MINIMAL with `patch` applied, header left out."""
    with pytest.raises(ScenarioError) as error:
        parse_scenario({**MINIMAL, **patch}, origin="test.yaml")
    header, *lines = str(error.value).splitlines()
    assert header == "invalid scenario test.yaml:"
    return [line.strip() for line in lines]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"caps": {"site_cap_w": -5}}, "caps.site_cap_w: Input should be greater than 0"),
        (
            {"services": [{"name": "chat"}, {"name": "batch", "traffic": {"peak_rps": 0}}]},
            "services[1].traffic.peak_rps: Input should be greater than 0",
        ),
        (
            {"services": [{"name": "chat"}, {"name": "chat"}]},
            "services[1].name: 'chat' is already the name of services[0]; "
            "service names must be unique",
        ),
        (
            {"services": [{"name": "chat", "min_replicas": 5, "max_replicas": 2}]},
            "services[0].min_replicas: 5 exceeds max_replicas (2)",
        ),
        (
            {"racks": {"count": 1, "gpu_model": "TPU"}},
            "racks.gpu_model: Input should be 'H100', 'H200' or 'A100'",
        ),
        (
            {"racks": {"count": 1, "gpu": {"idle_w": 500}}},
            "racks.gpu.idle_w: 500 W must be below decode_max_w (380 W)",
        ),
        (
            {
                "racks": {
                    "count": 1,
                    "servers_per_rack": 2,
                    "recirculation": {"matrix": [[0, 0.2], [0.7, 0.4]]},
                }
            },
            "racks.recirculation.matrix[1]: row sums to 1.1: a server cannot send all its "
            "exhaust to inlets, so every row must sum to less than 1",
        ),
        (
            {"racks": {"count": 1, "servers_per_rack": 2, "recirculation": {"matrix": [[0.1]]}}},
            "racks.recirculation.matrix: is 1x1 but the room has 2 servers: "
            "it needs one row and one column per server",
        ),
        (
            {"racks": {"count": 1, "servers_per_rack": 2, "recirculation": {"min_fraction": 0.5}}},
            "racks.recirculation.min_fraction: 0.5 exceeds max_fraction (0.35)",
        ),
        (
            {"caps": {"site_cap_w": 15000, "carbon": {"clean_g_per_kwh": 400}}},
            "caps.carbon.dirty_g_per_kwh: 300 g/kWh must be above clean_g_per_kwh (400 g/kWh)",
        ),
        (
            {"cooling": {"min_supply_c": 30}},
            "cooling.min_supply_c: 30 °C exceeds max_supply_c (27 °C)",
        ),
        (
            {"step_s": 30, "control_interval_s": 20},
            "control_interval_s: 20 s is shorter than step_s (30 s): "
            "the policies decide at most once a step",
        ),
        (
            {"policies": ["static", "climatik", "bogus"]},
            "policies[2]: unknown policy 'bogus'; known: " + ", ".join(POLICY_NAMES),
        ),
        ({"wattage": 3}, "wattage: Extra inputs are not permitted"),
    ],
)
def test_every_error_names_its_field_path(patch: dict[str, object], expected: str) -> None:
    """Checks across fields too: the path names the field, never the model or `(top level)`."""
    assert _errors(patch) == [expected]


def test_every_problem_of_a_model_is_reported_at_once() -> None:
    gpu = {"idle_w": 500, "min_clock_mhz": 3000}
    assert _errors({"racks": {"count": 1, "gpu": gpu}}) == [
        "racks.gpu.idle_w: 500 W must be below decode_max_w (380 W)",
        "racks.gpu.min_clock_mhz: 3000 MHz must be below max_clock_mhz (1980 MHz)",
    ]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"caps": {"site_cap_w": 5000}},
            "caps.site_cap_w: 5000 W is below the room's idle floor of 5600 W "
            "(2 servers at 2800 W idle each)",
        ),
        (
            # An A100 server idles at 2200 + 8 x 63 W: the floor follows the power model.
            {
                "racks": {"count": 1, "servers_per_rack": 2, "gpu_model": "A100"},
                "caps": {"site_cap_w": 5000},
            },
            "caps.site_cap_w: 5000 W is below the room's idle floor of 5408 W "
            "(2 servers at 2704 W idle each)",
        ),
        (
            {
                "racks": {"count": 2, "servers_per_rack": 2},
                "caps": {"site_cap_w": 15000, "rack_max_w": 5000},
            },
            "caps.rack_max_w: 5000 W is below a rack's idle floor of 5600 W "
            "(2 servers at 2800 W idle each)",
        ),
        (
            {"services": [{"name": "chat", "min_replicas": 3, "max_replicas": 4}]},
            "services[0].min_replicas: 3 replicas need 3 servers (one replica per server) "
            "but the room has 2",
        ),
        (
            {
                "services": [
                    {"name": "chat", "min_replicas": 2, "max_replicas": 2},
                    {"name": "batch", "min_replicas": 1},
                ]
            },
            "services: min_replicas add up to 3 (chat 2 + batch 1) but the room has 2 servers: "
            "every service keeps its minimum at once, one replica per server",
        ),
    ],
)
def test_physically_impossible_scenarios_are_refused_with_the_numbers(
    patch: dict[str, object], expected: str
) -> None:
    assert _errors(patch) == [expected]


def test_caps_at_the_idle_floor_and_minimums_filling_the_room_are_accepted() -> None:
    scenario = parse_scenario(
        {
            **MINIMAL,
            "racks": {"count": 2, "servers_per_rack": 2},
            "caps": {"site_cap_w": 4 * 2800, "rack_max_w": 2 * 2800},
            "services": [
                {"name": "chat", "min_replicas": 3, "max_replicas": 4},
                {"name": "batch", "min_replicas": 1, "max_replicas": 4},
            ],
        }
    )
    assert scenario.racks.servers * scenario.racks.idle_server_w == scenario.caps.site_cap_w


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("services", 1, "traffic", "peak_rps"), "services[1].traffic.peak_rps"),
        (("racks", "recirculation", "matrix", 2, 0), "racks.recirculation.matrix[2][0]"),
        (("policies", 2), "policies[2]"),
        (("control_interval_s",), "control_interval_s"),
    ],
)
def test_field_paths_bracket_indices_and_dot_keys(loc: tuple[str | int, ...], path: str) -> None:
    assert field_path(loc) == path


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
    assert err.splitlines() == [
        f"climatik simulate: invalid scenario {bad}:",
        "  caps.site_cap_w: Input should be greater than 0",
        "  services: List should have at least 1 item after validation, not 0",
    ]


def test_cli_refuses_a_physically_impossible_scenario_with_the_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    impossible = {**MINIMAL, "caps": {"site_cap_w": 5000}, "policies": ["climatik", "nope"]}
    bad.write_text(json.dumps(impossible), encoding="utf-8")
    assert main(["simulate", "--scenario", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"climatik simulate: invalid scenario {bad}:",
        "  policies[1]: unknown policy 'nope'; known: " + ", ".join(POLICY_NAMES),
    ]
    bad.write_text(json.dumps({**impossible, "policies": ["climatik"]}), encoding="utf-8")
    assert main(["simulate", "--scenario", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"climatik simulate: invalid scenario {bad}:",
        "  caps.site_cap_w: 5000 W is below the room's idle floor of 5600 W "
        "(2 servers at 2800 W idle each)",
    ]


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
    assert "violation ↓" in stdout
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
    # Issue 16: the bound beside the policies, with solver status, gap and relaxations.
    assert "\nbound " in stdout
    assert "share of bound" in stdout
    bounds = document["bounds"]
    for quantity in ("throughput", "cooling", "carbon", "peak_to_average"):
        assert set(bounds[quantity]) == {"values", "status", "solver", "mip_gap", "relaxations"}
        assert bounds[quantity]["mip_gap"] == 0.0
        assert bounds[quantity]["relaxations"]
    assert bounds["throughput"]["status"] == "tokens: Optimal; slo: Optimal"
    assert set(bounds["share_of_bound"]) == {"static", "climatik", "bound"}
    assert bounds["share_of_bound"]["bound"]["tokens"] in (1.0, None)
    assert bounds["baselines"]["tokens"] == "static"
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "power.png" in page
    assert "Share of bound" in page
    for png in ("power.png", "inlets.png", "carbon.png", "replicas-climatik.png"):
        assert (report / png).stat().st_size > 1000


def test_cli_rejects_an_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--hours", "0.1", "--policies", "climatik,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_yaml_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncaps: [\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as error:
        load_scenario(str(bad))
    assert str(error.value) == (
        f"scenario is not valid YAML: {bad}, line 3, column 1: "
        "expected the node content, but found '<stream end>' (while parsing a flow node)"
    )
