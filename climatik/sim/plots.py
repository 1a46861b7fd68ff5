"""The report's plots, each one readable on its own: matplotlib Figures with their captions.

Policies that act alike draw the same line (on `default`, `seed-threshold` never acts and
follows `uncapped`), so every policy has its own colour, dash and marker, and lines are drawn
widest first, so a line underneath shows on both sides of the one on top. Legends sit outside
the axes, where they cover neither data nor the cap. Figures are built without pyplot, so
nothing global is touched and the Agg renderer works on a headless machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from climatik.policies.deferrable import PLANNED_WORK_MARGIN
from climatik.sim.result import SimResult
from climatik.sim.scenario import Scenario

LINESTYLES: tuple[Any, ...] = ("-", (0, (6, 2)), (0, (4, 1, 1, 1)), "-", ":", (0, (1, 2)))
"""Solid for the first and the fourth (`climatik` in the default list), so the policy to read
stays a plain line; dashes apart the baselines drawn under it."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
WIDEST = 3.6
"""Line width of the first policy; each next one is thinner by `THINNER`, down to 1.2."""
THINNER = 0.9


@dataclass(frozen=True, slots=True)
class Plot:
    """One figure of the report, the file it is saved as and its caption."""

    filename: str
    figure: Figure
    caption: str


def policy_styles(names: Sequence[str], points: int) -> dict[str, dict[str, Any]]:
    """Distinct colour, dash, marker, width and drawing order per policy, widest first."""
    every = max(1, points // 12)
    return {
        name: {
            "label": name,
            "color": f"C{i % 10}",
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)],
            "markevery": (i * every // max(1, len(names)), every),
            "markersize": 5,
            "linewidth": max(1.2, WIDEST - THINNER * i),
            "zorder": 2 + i,
        }
        for i, name in enumerate(names)
    }


def _figure(height: float, rows: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(11, height), layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)
    return figure, [ax for (ax,) in axes]


def _legend_outside(figure: Figure, ax: Axes) -> None:
    figure.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small")


def power_plot(result: SimResult, scenario: Scenario) -> Plot:
    """Site IT power per policy against the site cap, and the carbon cap where one acted."""
    history = result.history
    hours = np.asarray(history.hours)
    names = list(result.policies)
    site_kw = np.asarray(history.site_w) / 1000.0
    caps_kw = np.asarray(history.cap_w) / 1000.0
    cap_kw = result.site_cap_w / 1000.0
    figure, (ax,) = _figure(4.5)
    for p, style in enumerate(policy_styles(names, len(hours)).values()):
        ax.plot(hours, site_kw[:, p], **style)
    ax.axhline(cap_kw, color="black", linestyle=(0, (8, 3)), linewidth=1.5, zorder=50)
    ax.plot([], [], color="black", linestyle=(0, (8, 3)), label=f"site cap ({cap_kw:g} kW)")
    caption = (
        "IT power of the whole site per policy (step averages), against the site cap, the one "
        "limit a violation is counted against."
    )
    deferrable = [s.name for s in scenario.services if s.deferrable]
    carbon = [p for p in range(len(names)) if not np.allclose(caps_kw[:, p], cap_kw)]
    if deferrable:
        carbon = []  # planned work: the budget below is constant, not a carbon cap
        caption += (
            f" No carbon cap is drawn: the work of the deferrable services "
            f"({', '.join(deferrable)}) is planned into the cleanest forecast slots before its "
            f"deadline (their ceilings are in the replica plots), within "
            f"{1 - PLANNED_WORK_MARGIN:.0%} of the site cap, and no carbon cap binds the other "
            "services."
        )
    if carbon:
        ax.step(
            hours,
            caps_kw[:, carbon[0]],
            where="post",
            color="green",
            linestyle=":",
            linewidth=2,
            zorder=49,
            label="carbon cap",
        )
        users = ", ".join(names[p] for p in carbon)
        caption += (
            f" The green dotted line is the carbon cap of {users}: the whole site's "
            "budget, lowered in dirty hours (no service is deferrable)."
        )
    ax.set_xlabel("hour of the run")
    ax.set_ylabel("IT power (kW)")
    _legend_outside(figure, ax)
    return Plot("power.png", figure, caption)


def replica_plot(result: SimResult, policy: str) -> Plot:
    """Replicas per service under one policy, beside the ceiling the policy set."""
    history = result.history
    hours = np.asarray(history.hours)
    p = list(result.policies).index(policy)
    replicas = np.asarray(history.replicas)[:, p, :]
    ceilings = np.asarray(history.ceilings)[:, p, :]
    figure, (ax,) = _figure(3.5)
    for j, service in enumerate(result.service_names):
        color = f"C{j % 10}"
        ax.step(hours, replicas[:, j], where="post", color=color, linewidth=2, label=service)
        ax.step(
            hours,
            ceilings[:, j],
            where="post",
            color=color,
            linestyle="--",
            linewidth=1.2,
            alpha=0.8,
            label=f"{service} ceiling",
        )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, float(np.nanmax(ceilings, initial=1.0)) + 0.5)
    ax.set_title(f"replicas: {policy}")
    ax.set_xlabel("hour of the run")
    ax.set_ylabel("replicas")
    _legend_outside(figure, ax)
    caption = (
        f"Replicas per service under {policy} (solid) and the replica ceiling, the "
        "ScaledObject's maxReplicaCount, the policy set (dashed, same colour): the autoscaler "
        "scales with demand below it and never above it."
    )
    return Plot(f"replicas-{policy}.png", figure, caption)


def inlet_plot(result: SimResult, scenario: Scenario) -> Plot:
    """The hottest inlet against the redline, over the supply air the cooling unit chose."""
    history = result.history
    hours = np.asarray(history.hours)
    names = list(result.policies)
    inlets = np.asarray(history.max_inlet_c)
    supply = np.asarray(history.supply_c)
    cooling = scenario.cooling
    aim = cooling.redline_c - cooling.supply_guard_c
    figure, (top, bottom) = _figure(6.5, rows=2)
    styles = policy_styles(names, len(hours))
    for p, style in enumerate(styles.values()):
        top.plot(hours, inlets[:, p], **style)
        bottom.plot(hours, supply[:, p], **{**style, "label": "_nolegend_"})
    top.axhline(cooling.redline_c, color="red", linestyle="--", label="redline", zorder=50)
    top.axhline(aim, color="grey", linestyle=":", label="cooling unit's aim", zorder=50)
    # nan-aware: a live row (`climatik demo`) has no inlets or supply air, a gap here.
    low = min(float(np.nanmin(inlets, initial=aim)), aim)
    top.set_ylim(low - 0.5, cooling.redline_c + 0.5)
    top.set_ylabel("hottest inlet (°C)")
    # Zoomed on the supply air chosen; a limit is drawn when it is near enough to matter.
    low = float(np.nanmin(supply, initial=cooling.max_supply_c)) - 1
    high = float(np.nanmax(supply, initial=cooling.min_supply_c)) + 1
    for limit in (cooling.min_supply_c, cooling.max_supply_c):
        if low <= limit <= high:
            bottom.axhline(limit, color="grey", linestyle=":", zorder=50)
    bottom.set_ylim(low, high)
    bottom.set_ylabel("supply air (°C)")
    bottom.set_xlabel("hour of the run")
    _legend_outside(figure, top)
    caption = (
        "Top: the hottest server inlet per policy against the redline. The cooling unit warms "
        f"its supply air until the hottest inlet sits {cooling.supply_guard_c:g} °C under the "
        "redline, so this line stays flat while cooling keeps up and rises only when the "
        "supply air is at its floor. Bottom: the supply air it chose, within its limits "
        f"({cooling.min_supply_c:g}-{cooling.max_supply_c:g} °C, dotted where in view). Warmer "
        "supply air "
        "costs less cooling energy: a placement that keeps inlets even shows here."
    )
    return Plot("inlets.png", figure, caption)


def carbon_plot(result: SimResult, scenario: Scenario) -> Plot:
    """Grid intensity (with the carbon band, if any) and cumulative emissions per policy."""
    history = result.history
    hours = np.asarray(history.hours)
    names = list(result.policies)
    emitted_kg = np.asarray(history.carbon_g) / 1000.0
    figure, (top, bottom) = _figure(6.5, rows=2)
    top.plot(hours, history.carbon_g_per_kwh, color="green", label="grid intensity")
    band = scenario.caps.carbon
    caption = "Top: the grid's carbon intensity."
    if band is not None:
        top.axhline(band.clean_g_per_kwh, color="grey", linestyle=":", label="clean (full cap)")
        top.axhline(
            band.dirty_g_per_kwh,
            color="black",
            linestyle=":",
            label=f"dirty (cap x {band.floor_fraction:g})",
        )
        caption += (
            f" A carbon-aware policy keeps the full cap at or below {band.clean_g_per_kwh:g} "
            f"g/kWh and lowers it to {band.floor_fraction:g} of the cap at or above "
            f"{band.dirty_g_per_kwh:g} g/kWh (dotted)."
        )
    top.set_ylabel("grid gCO2/kWh")
    for p, style in enumerate(policy_styles(names, len(hours)).values()):
        bottom.plot(hours, emitted_kg[:, p], **style)
    bottom.set_xlabel("hour of the run")
    bottom.set_ylabel("emitted kgCO2 (cumulative)")
    handles, labels = top.get_legend_handles_labels()
    more_handles, more_labels = bottom.get_legend_handles_labels()
    figure.legend(
        [*handles, *more_handles],
        [*labels, *more_labels],
        loc="outside right upper",
        fontsize="small",
    )
    caption += (
        " Bottom: emissions so far per policy, location based (grid intensity times facility "
        "energy)."
    )
    return Plot("carbon.png", figure, caption)


def report_plots(result: SimResult, scenario: Scenario) -> list[Plot]:
    """Every plot of the report, in the order the page shows them."""
    return [
        power_plot(result, scenario),
        *(replica_plot(result, name) for name in result.policies),
        inlet_plot(result, scenario),
        carbon_plot(result, scenario),
    ]
