"""The HTML report explains its scenario and every column; its plots read on their own."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

from climatik.sim.engine import Twin
from climatik.sim.plots import carbon_plot, inlet_plot, power_plot, replica_plot
from climatik.sim.policy_specs import POLICY_NAMES
from climatik.sim.report import POLICY_SUMMARIES, write_html_report
from climatik.sim.result import SimResult
from climatik.sim.scenario import Scenario
from climatik.sim.scenario_bounds import compute_bounds
from climatik.sim.shares import compare
from climatik.sim.summary import COLUMNS

POLICIES = ["uncapped", "static", "seed-threshold", "climatik"]


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    # A grid always dirtier than the band, so the carbon cap acts from the first decision, and
    # one deferrable service, so it binds only that one.
    return Scenario.model_validate(
        {
            "name": "tiny-carbon",
            "description": "three servers, a chat service and a deferrable batch job",
            "duration_h": 0.5,
            "racks": {"count": 1, "servers_per_rack": 3},
            "caps": {
                "site_cap_w": 20000,
                "carbon": {"clean_g_per_kwh": 10, "dirty_g_per_kwh": 20},
            },
            "services": [
                {"name": "chat", "max_replicas": 2, "traffic": {"peak_rps": 2}},
                {
                    "name": "batch",
                    "max_replicas": 2,
                    "deferrable": True,
                    "traffic": {"peak_rps": 1},
                },
            ],
            "policies": POLICIES,
        }
    )


@pytest.fixture(scope="module")
def result(scenario: Scenario) -> SimResult:
    return Twin(scenario).run()


def _draw(figure: Figure) -> None:
    """Lay the figure out as the report saves it (constrained layout), so extents are final."""
    figure.draw_without_rendering()


def _ydata(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_ydata(), dtype=float)


def _overlap(a: Bbox, b: Bbox) -> bool:
    return bool(a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)


def _axes(figure: Figure) -> list[Axes]:
    return list(figure.axes)


def test_the_page_explains_the_scenario_and_every_column(
    scenario: Scenario, result: SimResult, tmp_path: Path
) -> None:
    comparison = compare(result, compute_bounds(scenario), whole_replica=True)
    page = write_html_report(result, scenario, tmp_path, comparison).read_text(encoding="utf-8")
    assert "three servers, a chat service and a deferrable batch job" in page
    assert "Site cap: 20 kW" in page
    assert "0.5 h simulated" in page
    for column in COLUMNS:
        assert (
            f'<dt id="{column.key}">{html.escape(column.title)} <code>{column.key}</code></dt>'
            in page
        )
        assert f'href="#{column.key}"' in page  # every header links to its entry
    assert "<dt>bound</dt>" in page
    assert "<h2>Bounds</h2>" in page
    assert "Share of bound" in page
    for name in POLICIES:
        assert f"<li><b>{name}</b>: " in page
    for png in ("power.png", "inlets.png", "carbon.png", "replicas-climatik.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_every_legend_sits_outside_the_data(scenario: Scenario, result: SimResult) -> None:
    plots = [
        power_plot(result, scenario),
        replica_plot(result, "climatik"),
        inlet_plot(result, scenario),
        carbon_plot(result, scenario),
    ]
    for plot in plots:
        figure = plot.figure
        _draw(figure)
        assert figure.legends, plot.filename
        for legend in figure.legends:
            box = legend.get_window_extent()
            assert box.x1 <= figure.bbox.x1 + 1, f"{plot.filename}: legend cut"
            for ax in _axes(figure):
                assert not ax.get_legend()
                assert not _overlap(box, ax.get_window_extent()), plot.filename
        for ax in _axes(figure):
            label = ax.xaxis.label
            if label.get_text():
                box = label.get_window_extent()
                assert box.y0 >= figure.bbox.y0, f"{plot.filename}: x label cut"
                assert box.x1 <= figure.bbox.x1, f"{plot.filename}: x label cut"


def test_policies_that_coincide_stay_visible(scenario: Scenario, result: SimResult) -> None:
    (ax,) = _axes(power_plot(result, scenario).figure)
    lines = {line.get_label(): line for line in ax.get_lines()}
    styles = {
        (str(lines[n].get_color()), str(lines[n].get_linestyle()), str(lines[n].get_marker()))
        for n in POLICIES
    }
    assert len(styles) == len(POLICIES)
    under, over = lines["uncapped"], lines["seed-threshold"]
    assert under.get_zorder() < over.get_zorder()
    assert under.get_linewidth() > over.get_linewidth()  # shows on both sides of the one on top
    assert "site cap (20 kW)" in lines


def test_planned_deferrable_work_is_explained_instead_of_a_carbon_cap(
    scenario: Scenario, result: SimResult
) -> None:
    plot = power_plot(result, scenario)
    (ax,) = _axes(plot.figure)
    assert "carbon cap" not in [line.get_label() for line in ax.get_lines()]
    assert "deferrable services (batch) is planned into the cleanest" in plot.caption


def test_replica_plots_have_integer_ticks_and_the_ceiling(result: SimResult) -> None:
    plot = replica_plot(result, "climatik")
    _draw(plot.figure)
    (ax,) = _axes(plot.figure)
    ticks = ax.get_yticks()
    assert len(ticks) >= 2
    assert all(float(t).is_integer() for t in ticks)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["chat", "chat ceiling", "batch", "batch ceiling"]
    ceiling = next(line for line in ax.get_lines() if line.get_label() == "chat ceiling")
    assert _ydata(ceiling).max() <= 2
    assert "maxReplicaCount" in plot.caption


def test_the_inlet_plot_zooms_on_its_data(scenario: Scenario, result: SimResult) -> None:
    top, bottom = _axes(inlet_plot(result, scenario).figure)
    low, high = top.get_ylim()
    assert low < scenario.cooling.redline_c - scenario.cooling.supply_guard_c < high
    assert high - low < 5
    supply = np.concatenate([_ydata(line) for line in bottom.get_lines()])
    low, high = bottom.get_ylim()
    assert low <= supply.min()
    assert supply.max() <= high
    assert high - low <= supply.max() - supply.min() + 2.01


def test_every_policy_the_twin_knows_has_a_line_on_the_page() -> None:
    assert set(POLICY_SUMMARIES) == set(POLICY_NAMES)
