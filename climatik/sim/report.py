"""How a twin run is shown: a summary table for the terminal and an HTML page with plots.

The table has one row per policy and the metrics of SIMULATOR.md in their natural units, then a
`bound` row (the best possible for the scenario, `climatik.sim.shares`) with only the
bounded columns filled, and a second table of each policy's share of bound. The HTML page shows
the same and embeds PNG plots (power against the cap, replicas, inlet temperatures, carbon)
drawn with matplotlib's Agg backend, so it works on a headless machine.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from climatik.sim.engine import SimResult
from climatik.sim.shares import BOUND_ROW, SHARE_KEYS, Comparison

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (metric key, header, format)
    ("cap_violation_ws", "violation W*s", "{:.3g}"),
    ("max_overshoot_pct", "overshoot %", "{:.2f}"),
    ("tokens", "tokens", "{:.4g}"),
    ("tokens_per_s", "tokens/s", "{:.0f}"),
    ("tokens_per_joule", "tokens/J", "{:.4f}"),
    ("energy_kwh", "IT kWh", "{:.1f}"),
    ("cooling_kwh", "cooling kWh", "{:.1f}"),
    ("peak_inlet_c", "peak inlet °C", "{:.2f}"),
    ("time_above_redline_s", "s > redline", "{:.0f}"),
    ("carbon_g", "CO2 kg", "{:.1f}"),
    ("carbon_g_per_1k_tokens", "gCO2/1k tok", "{:.4f}"),
    ("slo_attainment", "SLO %", "{:.1f}"),
    ("peak_to_average", "peak/avg", "{:.3f}"),
)


_SHARE_HEADERS = {
    "tokens": "tokens",
    "slo_attainment": "SLO",
    "cooling_kwh": "cooling",
    "carbon_g_per_1k_tokens": "gCO2/1k tok",
    "peak_to_average": "peak/avg",
}


def _cell(key: str, fmt: str, value: float | None) -> str:
    if value is None:
        return ""
    if key == "carbon_g":
        value = value / 1000.0
    elif key == "slo_attainment":
        value = value * 100.0
    return fmt.format(value)


def _rows(result: SimResult, comparison: Comparison | None) -> list[list[str]]:
    rows = [
        [name, *(_cell(key, fmt, metrics[key]) for key, _, fmt in _COLUMNS)]
        for name, metrics in result.policies.items()
    ]
    if comparison is not None:
        bound = comparison.bound_row
        rows.append([BOUND_ROW, *(_cell(key, fmt, bound.get(key)) for key, _, fmt in _COLUMNS)])
    return rows


def _share_cell(value: float | None) -> str:
    return "-" if value is None else f"{round(value * 100)} %"


def _share_rows(comparison: Comparison) -> list[list[str]]:
    return [
        [name, *(_share_cell(shares[key]) for key in SHARE_KEYS)]
        for name, shares in comparison.shares.items()
    ]


def _baselines_line(comparison: Comparison) -> str:
    parts = [
        f"{_SHARE_HEADERS[key]}: {comparison.baselines[key] or 'none in this run'}"
        for key in SHARE_KEYS
    ]
    return "baselines: " + "; ".join(parts)


def _fixed_width(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return [line(headers), "-" * len(line(headers)), *(line(r) for r in rows)]


def summary_table(result: SimResult, comparison: Comparison | None = None) -> str:
    """A fixed-width table, one row per policy (and the bound), headed by the scenario; with a
    comparison, a second table of shares of bound."""
    headers = ["policy", *(header for _, header, _ in _COLUMNS)]
    hours = result.duration_s / 3600.0
    title = (
        f"scenario {result.scenario}: {hours:g} h simulated, site cap "
        f"{result.site_cap_w / 1000:g} kW, redline {result.redline_c:g} °C "
        "(carbon is location based)"
    )
    if result.knowledge == "exact":
        title += "; EXACT KNOWLEDGE: policies see what the controller cannot measure"
    lines = [title, *_fixed_width(headers, _rows(result, comparison))]
    if comparison is None:
        return "\n".join(lines)
    share_headers = ["share of bound", *(_SHARE_HEADERS[key] for key in SHARE_KEYS)]
    lines += [
        "",
        "share of bound = (policy - baseline) / (bound - baseline); 100 % = the bound; "
        "- = no baseline, no gain to share, or a policy that breaks the cap",
        _baselines_line(comparison),
        *_fixed_width(share_headers, _share_rows(comparison)),
        *comparison.notes.values(),
    ]
    return "\n".join(lines)


def write_html_report(
    result: SimResult, folder: Path, comparison: Comparison | None = None
) -> Path:
    """Write `index.html` and its PNG plots into `folder`; return the page's path."""
    import matplotlib  # noqa: PLC0415  (heavy: only imported when a report is asked for)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    history = result.history
    hours = np.asarray(history.hours)
    names = list(result.policies)
    site = np.asarray(history.site_w) / 1000.0
    caps = np.asarray(history.cap_w) / 1000.0
    inlets = np.asarray(history.max_inlet_c)
    replicas = np.asarray(history.replicas)
    carbon = np.asarray(history.carbon_g_per_kwh)
    images: list[tuple[str, str]] = []

    def save(fig: object, filename: str, caption: str) -> None:
        fig.savefig(folder / filename, dpi=90)  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        images.append((filename, caption))

    fig, ax = plt.subplots(figsize=(10, 4))
    for p, name in enumerate(names):
        ax.plot(hours, site[:, p], label=name, linewidth=1)
    ax.axhline(result.site_cap_w / 1000.0, color="black", linestyle="--", label="site cap")
    for p, name in enumerate(names):
        if not np.allclose(caps[:, p], result.site_cap_w / 1000.0):
            # The carbon cap: the whole site's, or only deferrable services' when there are some.
            ax.plot(hours, caps[:, p], linestyle=":", label=f"{name} carbon cap")
    ax.set_xlabel("hour")
    ax.set_ylabel("IT power (kW)")
    ax.legend(fontsize="small", ncol=2)
    save(fig, "power.png", "IT power of the site against its cap, per policy")

    for p, name in enumerate(names):
        fig, ax = plt.subplots(figsize=(10, 3))
        for j, service in enumerate(result.service_names):
            ax.step(hours, replicas[:, p, j], where="post", label=service)
        ax.set_title(f"replicas: {name}")
        ax.set_xlabel("hour")
        ax.legend(fontsize="small")
        save(fig, f"replicas-{name}.png", f"replicas per service under {name}")

    fig, ax = plt.subplots(figsize=(10, 4))
    for p, name in enumerate(names):
        ax.plot(hours, inlets[:, p], label=name, linewidth=1)
    ax.axhline(result.redline_c, color="red", linestyle="--", label="redline")
    ax.set_xlabel("hour")
    ax.set_ylabel("hottest inlet (°C)")
    ax.legend(fontsize="small", ncol=2)
    save(fig, "inlets.png", "hottest server inlet, per policy")

    emitted_kg = np.asarray(history.carbon_g) / 1000.0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(hours, carbon, color="green")
    top.set_ylabel("grid gCO2/kWh")
    for p, name in enumerate(names):
        bottom.plot(hours, emitted_kg[:, p], label=name, linewidth=1)
    bottom.set_xlabel("hour")
    bottom.set_ylabel("emitted kgCO2 (cumulative)")
    bottom.legend(fontsize="small", ncol=2)
    save(fig, "carbon.png", "grid carbon intensity and cumulative emissions per policy")

    rows = "".join(
        "<tr><td>" + "</td><td>".join(html.escape(c) for c in row) + "</td></tr>"
        for row in _rows(result, comparison)
    )
    header = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in _COLUMNS)
    bounds_html = "" if comparison is None else _bounds_html(comparison)
    figures = "".join(
        f'<figure><img src="{f}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}'
        "</figcaption></figure>"
        for f, c in images
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>climatik simulate: {html.escape(result.scenario)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child{text-align:left}img{max-width:100%}</style></head><body>"
        f"<h1>Scenario {html.escape(result.scenario)}</h1>"
        f"<p>{result.duration_s / 3600:g} h simulated. Carbon is location based.</p>"
        f"<table><tr><th>policy</th>{header}</tr>{rows}</table>{bounds_html}{figures}"
        "</body></html>"
    )
    page_path = folder / "index.html"
    page_path.write_text(page, encoding="utf-8")
    return page_path


def _bounds_html(comparison: Comparison) -> str:
    """The share-of-bound table and, per bound, its solver status and relaxations."""
    head = "".join(f"<th>{html.escape(_SHARE_HEADERS[k])}</th>" for k in SHARE_KEYS)
    body = "".join(
        "<tr><td>" + "</td><td>".join(html.escape(c) for c in row) + "</td></tr>"
        for row in _share_rows(comparison)
    )
    bounds = comparison.bounds
    items = "".join(
        f"<li><b>{html.escape(title)}</b> ({html.escape(bound.status)}, MIP gap "
        f"{bound.mip_gap:g}): " + "; ".join(html.escape(r) for r in bound.relaxations) + "</li>"
        for title, bound in (
            ("tokens and SLO", bounds.throughput),
            ("cooling", bounds.cooling),
            ("carbon", bounds.carbon),
            ("peak-to-average", bounds.peak_to_average),
        )
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in comparison.notes.values())
    return (
        "<h2>Share of bound</h2><p>(policy - baseline) / (bound - baseline); 100 % is the "
        "bound, - means no baseline in the run, no gain to share, or a policy that breaks "
        f"the cap. {html.escape(_baselines_line(comparison))}.</p>"
        f"<table><tr><th>policy</th>{head}</tr>{body}</table>"
        f"<h2>Bounds</h2><ul>{items}{notes}</ul>"
    )
