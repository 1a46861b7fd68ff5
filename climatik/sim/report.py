"""The HTML page of a twin run: what was simulated, the figures, what each one means, the bounds,
and plots that read on their own (`climatik.sim.plots`).

A reader who never saw the scenario file learns from the page what room, caps, services and
policies were run, which way each column is better and how it is defined, and what the bound
row assumes. The tables are the terminal's (`climatik.sim.summary`), cell for cell.
"""

from __future__ import annotations

import html
from pathlib import Path

from climatik.sim.result import SimResult
from climatik.sim.scenario import Scenario
from climatik.sim.shares import BOUND_ROW, SHARE_KEYS, Comparison
from climatik.sim.summary import (
    COLUMNS,
    SHARE_EXPLAINED,
    SHARE_HEADERS,
    baselines_line,
    metric_tables,
    share_rows,
    title_line,
)

POLICY_SUMMARIES = {
    "uncapped": "replicas follow demand up to the user's maximum; no power control",
    "static": "ceilings sized once for nameplate power: the usual safe provisioning",
    "seed-threshold": (
        "the original design's rule: from 80 % of the cap the ceiling is the current replicas "
        "+ 1, from 95 % the current replicas; below 80 % it is released"
    ),
    "climatik": (
        "Climatik's defaults: headroom ceilings from measured watts, heat-aware placement, "
        "a carbon cap when the scenario has one, and tuned GPU clocks"
    ),
    "headroom": (
        "headroom ceilings from measured watts alone (no carbon, maximum clocks, round-robin "
        "placement): what `climatik demo` runs live"
    ),
    "headroom-tuned": (
        "headroom with every service at its tuned GPU clock: what `climatik demo --gpu-tuning "
        "Apply` runs live"
    ),
    "climatik-no-carbon": "climatik without carbon input (an ablation)",
    "climatik-max-clock": "climatik with GPUs at their maximum clock (an ablation)",
    "climatik-migrate": (
        "climatik that also moves a running replica to a cooler server when the heat matrix "
        "predicts a lower hottest inlet (`placement.migration`, opt-in live)"
    ),
    "headroom-joint-clocks": (
        "headroom-tuned with clocks moved with the replicas under the cap: what `climatik demo "
        "--gpu-tuning Apply --clocks-under-cap` runs live"
    ),
    "climatik-joint-clocks": (
        "climatik with clocks decided with the replicas under a binding cap "
        "(`gpuTuning.clocksUnderCap`, opt-in live)"
    ),
    "placement-random": "climatik's ceilings, carbon and clocks; random placement",
    "placement-round-robin": "climatik's ceilings, carbon and clocks; round-robin placement",
    "placement-minhr": (
        "climatik's ceilings, carbon and clocks; MinHR placement (least heat recirculated)"
    ),
    "placement-zone": "climatik's ceilings, carbon and clocks; zone-balanced placement",
}
"""One line per policy of `climatik.sim.policy_specs`, for the page's scenario section."""

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;"
    "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    "dt{font-weight:bold;margin-top:.5em}figcaption{max-width:60em}"
)


def _e(text: object) -> str:
    return html.escape(str(text))


def _scenario_html(result: SimResult, scenario: Scenario) -> str:
    """What was run: the scenario's description, room, caps, services and policies."""
    racks, caps, cooling = scenario.racks, scenario.caps, scenario.cooling
    facts = [
        f"{result.duration_s / 3600:g} h simulated in steps of {scenario.step_s:g} s; the "
        f"policies decide every {scenario.control_interval_s:g} s.",
        f"Room: {racks.count} racks x {racks.servers_per_rack} servers x "
        f"{racks.gpus_per_server} {racks.gpu_model} GPUs; a server idles at "
        f"{racks.idle_server_w / 1000:g} kW and draws up to {racks.nameplate_server_w / 1000:g} "
        "kW (nameplate).",
        f"Site cap: {caps.site_cap_w / 1000:g} kW of IT power for the whole room"
        + (f"; each rack at most {caps.rack_max_w / 1000:g} kW" if caps.rack_max_w else "")
        + (f"; rack inlets at most {caps.rack_max_inlet_c:g} °C" if caps.rack_max_inlet_c else "")
        + ".",
        f"Cooling: redline {cooling.redline_c:g} °C; supply air "
        f"{cooling.min_supply_c:g}-{cooling.max_supply_c:g} °C, aimed {cooling.supply_guard_c:g} "
        "°C under the redline.",
    ]
    if caps.carbon is not None:
        band = caps.carbon
        facts.append(
            f"Carbon cap: the full cap at or below {band.clean_g_per_kwh:g} gCO2/kWh, down to "
            f"{band.floor_fraction:g} of it at or above {band.dirty_g_per_kwh:g} gCO2/kWh; it "
            "binds only deferrable services when there are some."
        )
    if result.knowledge == "exact":
        facts.append(
            "EXACT KNOWLEDGE: the policies saw what the live controller cannot measure "
            "(server idle draw, the room's heat matrix, unlagged chassis power and inlets)."
        )
    services = "".join(
        f"<tr><td>{_e(s.name)}</td><td>{_e(s.model)}</td><td>{s.min_replicas}-{s.max_replicas}"
        f"</td><td>{s.slo.ttft_s:g} s / {s.slo.tbt_s:g} s</td><td>{s.traffic.peak_rps:g}</td>"
        f"<td>{'yes' if s.deferrable else 'no'}</td></tr>"
        for s in scenario.services
    )
    policies = "".join(
        f"<li><b>{_e(name)}</b>: {_e(POLICY_SUMMARIES.get(name, ''))}</li>"
        for name in result.policies
    )
    return (
        f"<p>{_e(scenario.description or 'No description in the scenario file.')}</p>"
        f"<ul>{''.join(f'<li>{_e(f)}</li>' for f in facts)}</ul>"
        "<table><tr><th>service</th><th>model</th><th>replicas (min-max)</th>"
        "<th>SLO: first token / between tokens</th><th>peak requests/s</th>"
        f"<th>deferrable</th></tr>{services}</table>"
        f"<p>Policies compared, on the same traffic, carbon and noise:</p><ul>{policies}</ul>"
    )


def _tables_html(result: SimResult, comparison: Comparison | None) -> str:
    parts = []
    for table in metric_tables(result, comparison):
        head = "".join(
            f'<th><a href="#{c.key}">{_e(c.title)}</a>' + (f"<br>{_e(u)}" if u else "") + "</th>"
            for c, u in zip(table.columns, table.units, strict=True)
        )
        body = "".join(
            "<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
        )
        parts.append(f"<table><tr><th>{_e(table.title)}</th>{head}</tr>{body}</table>")
    return "".join(parts)


def _glossary_html() -> str:
    """Every column: its header, its metric key, which way is better and what it means."""
    entries = "".join(
        f'<dt id="{c.key}">{_e(c.title)} <code>{_e(c.key)}</code></dt>'
        f"<dd>{_e(c.meaning)} {_e(c.better.capitalize())} is better.</dd>"
        for c in COLUMNS
    )
    return (
        "<h2>What the columns mean</h2><p>↑ higher is better, ↓ lower is better. Each column "
        "reads in one unit, under its header. The JSON written by <code>--json</code> has "
        "the same figures under the keys shown, in W·s, kWh, g, s and fractions.</p>"
        f"<dl>{entries}<dt>{BOUND_ROW}</dt><dd>The best any policy could reach on this "
        "scenario over the same hours, with perfect foresight of demand and carbon and the "
        "twin's own physics, solved as linear programs; only the bounded columns are filled. "
        "A policy that beats it means the bound is wrong.</dd></dl>"
    )


def _bounds_html(comparison: Comparison) -> str:
    """The share-of-bound table and, per bound, its solver status and relaxations."""
    head = "".join(f"<th>{_e(SHARE_HEADERS[k])}</th>" for k in SHARE_KEYS)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
        for row in share_rows(comparison)
    )
    bounds = comparison.bounds
    items = "".join(
        f"<li><b>{_e(title)}</b> ({_e(bound.status)}, MIP gap {bound.mip_gap:g}): "
        + "; ".join(_e(r) for r in bound.relaxations)
        + "</li>"
        for title, bound in (
            ("tokens and SLO", bounds.throughput),
            ("cooling", bounds.cooling),
            ("carbon", bounds.carbon),
            ("peak-to-average", bounds.peak_to_average),
        )
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in comparison.notes.values())
    return (
        f"<h2>Share of bound</h2><p>{_e(SHARE_EXPLAINED)}. {_e(baselines_line(comparison))}."
        f"</p><table><tr><th>policy</th>{head}</tr>{body}</table>"
        "<h2>Bounds</h2><p>Each bound relaxes the problem in ways that can only make it "
        "easier to reach, so it is an upper limit for any policy; what each one relaxes:</p>"
        f"<ul>{items}{notes}</ul>"
    )


def write_html_report(
    result: SimResult, scenario: Scenario, folder: Path, comparison: Comparison | None = None
) -> Path:
    """Write `index.html` and its PNG plots into `folder`; return the page's path."""
    from climatik.sim.plots import report_plots  # noqa: PLC0415  (matplotlib: only when asked)

    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    for plot in report_plots(result, scenario):
        plot.figure.savefig(folder / plot.filename, dpi=100)
        figures.append(
            f'<figure><img src="{_e(plot.filename)}" alt="{_e(plot.caption)}">'
            f"<figcaption>{_e(plot.caption)}</figcaption></figure>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>climatik simulate: {_e(result.scenario)}</title><style>{_STYLE}</style>"
        f"</head><body><h1>Scenario {_e(result.scenario)}</h1>"
        f"{_scenario_html(result, scenario)}"
        f"<h2>Results</h2><p>{_e(title_line(result))}.</p>{_tables_html(result, comparison)}"
        f"{_glossary_html()}"
        f"{'' if comparison is None else _bounds_html(comparison)}"
        f"<h2>Plots</h2>{''.join(figures)}</body></html>"
    )
    page_path = folder / "index.html"
    page_path.write_text(page, encoding="utf-8")
    return page_path
