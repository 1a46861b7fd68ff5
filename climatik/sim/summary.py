"""The terminal summary of a twin run: two tables that fit 100 columns, a legend, shares of bound.

Every column says which way is better (↑ higher, ↓ lower) and reads in one unit for all its
rows, picked from its largest value (kWh, or MWh once that is 10 MWh or more; millions of
tokens), so rows compare digit by digit and no cell needs an exponent. The same columns head
the HTML report, whose glossary is their `meaning`. The table is hand-laid rather than drawn
with a terminal library: the controller's image shares these dependencies, and a fixed layout
reads the same on a terminal, in a log and in the docs that quote it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from climatik.sim.result import SimResult
from climatik.sim.shares import BOUND_ROW, SHARE_KEYS, Comparison

WIDTH = 100
"""Columns the summary fits in: every table and wrapped line."""

SIGNIFICANT = 4
"""Digits a column's largest value shows when the column has no fixed decimals."""

Scales = tuple[tuple[float, str], ...]
"""(divisor, unit) from smallest to largest: a column reads in the largest unit its largest
value is at least ten of."""

ENERGY: Scales = ((1.0, "Wh"), (1e3, "kWh"), (1e6, "MWh"), (1e9, "GWh"))
MASS: Scales = ((1.0, "g"), (1e3, "kg"), (1e6, "t"))
COUNT: Scales = ((1.0, ""), (1e3, "thousand"), (1e6, "million"), (1e9, "billion"))
DURATION: Scales = ((1.0, "s"), (60.0, "min"), (3600.0, "h"))


@dataclass(frozen=True, slots=True)
class Column:
    """One metric of SIMULATOR.md as the summary shows it."""

    key: str
    header: str
    better: Literal["higher", "lower"]
    scales: Scales
    meaning: str
    """What the figure is, for the report's glossary."""
    brief: str = ""
    """A few words for the terminal's legend, where the header alone does not say it."""
    to_base: float = 1.0
    """The metric times this is in the scales' first unit (W·s to Wh, kWh to Wh, 0-1 to %)."""
    decimals: int | None = None
    """Fixed decimals; None shows `SIGNIFICANT` digits of the column's largest value."""

    @property
    def arrow(self) -> str:
        """↑ when higher is better, ↓ when lower is."""
        return "↑" if self.better == "higher" else "↓"

    @property
    def title(self) -> str:
        """The header with its direction."""
        return f"{self.header} {self.arrow}"


COLUMNS: tuple[Column, ...] = (
    Column(
        "cap_violation_ws",
        "violation",
        "lower",
        ENERGY,
        "IT energy drawn above the site cap: the integral of max(0, P - cap) over the run, on "
        "the step-average power of the whole site (the hard cap, even where a carbon cap is "
        "lower).",
        "energy drawn above the site cap",
        to_base=1 / 3600,
    ),
    Column(
        "max_overshoot_pct",
        "overshoot",
        "lower",
        ((1.0, "%"),),
        "The largest excess of step-average site power over the site cap, as a share of the "
        "cap (0 when never over).",
        "its largest excess",
        decimals=1,
    ),
    Column(
        "peak_to_average",
        "peak/avg",
        "lower",
        ((1.0, ""),),
        "The racks' power peaks added up, over the peak of the site's total power. 1 means "
        "every rack peaks when the site does; higher means racks peak at different times, so "
        "power provisioned for each rack's own peak adds up to more than the site ever draws.",
        "sum of rack peaks / peak of the site",
        decimals=3,
    ),
    Column(
        "cooling_kwh",
        "cooling",
        "lower",
        ENERGY,
        "Energy the cooling unit used: IT power over its coefficient of performance at the "
        "supply air temperature. Warmer supply air (cooler inlets from better placement) "
        "costs less.",
        to_base=1000.0,
    ),
    Column(
        "peak_inlet_c",
        "peak inlet",
        "lower",
        ((1.0, "°C"),),
        "The hottest server inlet over the run. The cooling unit aims the hottest inlet a "
        "guard below the redline, so this stays near it while cooling keeps up.",
        decimals=2,
    ),
    Column(
        "time_above_redline_s",
        "> redline",
        "lower",
        DURATION,
        "Time with any server inlet above the redline.",
        "time with an inlet above the redline",
    ),
    Column(
        "tokens",
        "tokens",
        "higher",
        COUNT,
        "Output tokens served over the run.",
    ),
    Column(
        "tokens_per_s",
        "tokens/s",
        "higher",
        ((1.0, ""),),
        "Output tokens served per second, the mean over the run.",
        decimals=0,
    ),
    Column(
        "slo_attainment",
        "SLO",
        "higher",
        ((1.0, "%"),),
        "Share of requests that met their service's objectives for time to first token and "
        "time between tokens (dropped requests miss).",
        "requests that met their latency objectives",
        to_base=100.0,
        decimals=1,
    ),
    Column(
        "energy_kwh",
        "energy",
        "lower",
        ENERGY,
        "IT energy: what the servers drew, idle ones included (cooling not counted).",
        "IT energy",
        to_base=1000.0,
    ),
    Column(
        "tokens_per_joule",
        "tokens/J",
        "higher",
        ((1.0, ""),),
        "Output tokens per joule of IT energy.",
    ),
    Column(
        "carbon_g",
        "CO2",
        "lower",
        MASS,
        "Location-based emissions: grid carbon intensity times facility energy (IT, cooling "
        "and distribution losses).",
        "location-based emissions of facility energy",
    ),
    Column(
        "carbon_g_per_1k_tokens",
        "CO2/1k tok",
        "lower",
        MASS,
        "Emissions per thousand output tokens.",
    ),
)
"""Every metric of a run, in the order the tables show them."""

BY_KEY = {column.key: column for column in COLUMNS}

TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "cap and heat",
        (
            "cap_violation_ws",
            "max_overshoot_pct",
            "peak_to_average",
            "cooling_kwh",
            "peak_inlet_c",
            "time_above_redline_s",
        ),
    ),
    (
        "work and carbon",
        (
            "tokens",
            "tokens_per_s",
            "slo_attainment",
            "energy_kwh",
            "tokens_per_joule",
            "carbon_g",
            "carbon_g_per_1k_tokens",
        ),
    ),
)
"""The two tables: a title over the policy names, then their columns' keys."""

SHARE_HEADERS = {
    "tokens": "tokens",
    "slo_attainment": "SLO",
    "cooling_kwh": "cooling",
    "cooling_whole_kwh": "cool (whole)",
    "carbon_g_per_1k_tokens": "gCO2/1k tok",
    "peak_to_average": "peak/avg",
}
SHARE_EXPLAINED = (
    "share of bound = (policy - baseline) / (bound - baseline), higher is better: 100 % = the "
    "bound, 0 % = the baseline; - = no baseline, no gain to share, or a policy that breaks the "
    "cap"
)


@dataclass(frozen=True, slots=True)
class FormattedColumn:
    """One column's unit and cells, one per row."""

    unit: str
    cells: list[str]


def format_column(column: Column, values: Sequence[float | None]) -> FormattedColumn:
    """The column's unit, picked from its largest value, and every value in it.

    None is an empty cell (the bound row's unbounded columns); an exact zero is "0", so a
    policy that never broke the cap reads as such."""
    base = [None if v is None else v * column.to_base for v in values]
    finite = [abs(v) for v in base if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    divisor, unit = column.scales[0]
    for scale_divisor, scale_unit in column.scales[1:]:
        if largest >= 10 * scale_divisor:
            divisor, unit = scale_divisor, scale_unit
    decimals = column.decimals
    if decimals is None:
        scaled = largest / divisor
        magnitude = math.floor(math.log10(scaled)) if scaled > 0 else 0
        decimals = max(0, min(4, SIGNIFICANT - 1 - magnitude))
    cells = []
    for value in base:
        if value is None:
            cells.append("")
        elif not math.isfinite(value):
            cells.append("n/a")
        elif value == 0:
            cells.append("0")
        else:
            cells.append(f"{value / divisor:,.{decimals}f}")
    return FormattedColumn(unit, cells)


def lay_out(headers: Sequence[Sequence[str]], rows: Sequence[Sequence[str]]) -> list[str]:
    """Header lines, a rule and the rows: the first column left-aligned, the rest right."""
    every = [*headers, *rows]
    widths = [max(len(r[i]) for r in every) for i in range(len(every[0]))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return [*(line(h) for h in headers), rule, *(line(r) for r in rows)]


@dataclass(frozen=True, slots=True)
class Table:
    """One summary table: its title, its columns (units decided) and its rows of cells."""

    title: str
    columns: tuple[Column, ...]
    units: list[str]
    rows: list[list[str]]
    """The policy (or `bound`) name, then one cell per column."""


def metric_tables(result: SimResult, comparison: Comparison | None = None) -> list[Table]:
    """The run's metrics as `TABLES`, one row per policy and, with a comparison, the bound."""
    names = list(result.policies)
    figures: list[dict[str, float]] = [result.policies[name] for name in names]
    if comparison is not None:
        names.append(BOUND_ROW)
        figures.append(comparison.bound_row)
    tables = []
    for title, keys in TABLES:
        columns = tuple(BY_KEY[key] for key in keys)
        formatted = [format_column(c, [f.get(c.key) for f in figures]) for c in columns]
        rows = [[name, *(column.cells[i] for column in formatted)] for i, name in enumerate(names)]
        tables.append(Table(title, columns, [column.unit for column in formatted], rows))
    return tables


def legend(columns: Iterable[Column]) -> str:
    """↑/↓ and the columns whose header needs a word more."""
    words = "; ".join(f"{c.header}: {c.brief}" for c in columns if c.brief)
    return (
        f"↑ higher is better, ↓ lower is better. {words}. {BOUND_ROW}: the best possible "
        "(perfect foresight), bounded columns only."
    )


def wrap(text: str) -> list[str]:
    """A paragraph in lines of at most `WIDTH`, continuation lines indented."""
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def share_rows(comparison: Comparison) -> list[list[str]]:
    """Each policy's (and the bound's) share of bound per quantity, in whole percent."""
    return [
        [name, *(_percent(shares[key]) for key in shown_share_keys(comparison))]
        for name, shares in comparison.shares.items()
    ]


def shown_share_keys(comparison: Comparison) -> list[str]:
    """The shares shown: the whole-replica cooling only where the comparison placed them."""
    return [k for k in SHARE_KEYS if k != "cooling_whole_kwh" or comparison.whole_replica]


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{round(share * 100)} %"


def baselines_line(comparison: Comparison) -> str:
    """Which policy each share of bound is measured from."""
    parts = [
        f"{SHARE_HEADERS[key]}: {comparison.baselines[key] or 'none in this run'}"
        for key in shown_share_keys(comparison)
    ]
    return "baselines: " + "; ".join(parts)


def title_line(result: SimResult) -> str:
    """What was run: scenario, simulated time, cap and redline, and the knowledge regime."""
    title = (
        f"scenario {result.scenario}: {result.duration_s / 3600:g} h simulated, site cap "
        f"{result.site_cap_w / 1000:g} kW, redline {result.redline_c:g} °C "
        "(carbon is location based)"
    )
    if result.knowledge == "exact":
        title += "; EXACT KNOWLEDGE: policies see what the controller cannot measure"
    return title


def summary_table(result: SimResult, comparison: Comparison | None = None) -> str:
    """The run in at most `WIDTH` columns: its title, the metric tables and their legend, then
    with a comparison the table of shares of bound and its notes."""
    lines = wrap(title_line(result))
    for table in metric_tables(result, comparison):
        headers = [[table.title, *(c.title for c in table.columns)], ["", *table.units]]
        lines += ["", *lay_out(headers, table.rows)]
    lines += ["", *wrap(legend(COLUMNS))]
    if comparison is None:
        return "\n".join(lines)
    share_headers = [
        ["share of bound", *(SHARE_HEADERS[key] for key in shown_share_keys(comparison))]
    ]
    lines += ["", *lay_out(share_headers, share_rows(comparison))]
    for paragraph in (SHARE_EXPLAINED, baselines_line(comparison), *comparison.notes.values()):
        lines += wrap(paragraph)
    return "\n".join(lines)
