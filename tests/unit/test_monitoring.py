"""The dashboard, the alert rules and the metrics docs read only what the controller exports.

Dashboards and alerts name metrics in PromQL strings that no type checker sees; a renamed metric
or a dropped label leaves a panel blank or an alert that can never fire, silently. These tests
build the controller's registry (every metric class on one registry, as the manager does), parse
the metric selectors out of every expression, and hold the files to it: names that exist, the
`$config` filter and the `config` label kept on every per-config panel, units on the panels,
absolute runbook URLs whose anchors exist, and a docs table that lists exactly the registry.
`promtool check rules` and `promtool test rules` run in tests/integration/test_deploy.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.placement_metrics import PlacementMetrics
from climatik.reconcilers.series import ConfigCounter, ConfigGauge
from climatik.runtime.metrics import RuntimeMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = REPO_ROOT / "deploy" / "monitoring"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
REPOSITORY_URL = "https://github.com/climatik-project/climatik"
RUNBOOK_PAGE = f"{REPOSITORY_URL}/blob/main/docs/operations.md"
CONFIG_FILTER = 'config=~"$config"'

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


@dataclass(frozen=True)
class Exported:
    """One metric as the controller defines it."""

    name: str
    kind: str
    labels: tuple[str, ...]

    @property
    def samples(self) -> set[str]:
        """The series names Prometheus stores for it (a counter's `_total`, a histogram's
        `_bucket`, ...)."""
        return {self.name + suffix for suffix in _SUFFIXES[self.kind]}


def controller_metrics() -> dict[str, Exported]:
    """Every metric the controller registers, by each series name it exposes."""
    registry = CollectorRegistry()
    groups = (RuntimeMetrics(registry), CappingMetrics(registry), PlacementMetrics(registry))
    found = [
        # prometheus_client keeps label names private; the registry's own view has no labels
        # for a metric that has no series yet.
        Exported(metric._name, str(metric._type), tuple(metric._labelnames))
        for group in groups
        for metric in vars(group).values()
        if isinstance(metric, MetricWrapperBase)
    ] + [
        # The per-config families (reconcilers/series.py) describe themselves.
        Exported(described.name, described.type, family.labelnames)
        for group in groups
        for family in vars(group).values()
        if isinstance(family, ConfigGauge | ConfigCounter)
        for described in family.describe()
    ]
    assert len(found) == len(list(registry.collect())), "a metric not held by its class"
    return {sample: metric for metric in found for sample in metric.samples}


# -- PromQL, as far as these files use it ----------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_NOT_METRICS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "group", "and", "or", "unless", "bool", "offset",
}  # fmt: skip


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: str
    """The `{...}` part, or ""."""


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of `expr` (function calls, operators and numbers left out)."""
    expr = _RANGE.sub("", _GROUPING.sub(" ", expr))
    expr = _NUMBER.sub(" ", expr)
    found = []
    for match in _SELECTOR.finditer(expr):
        name, matchers = match.group(1), match.group(2) or ""
        calls = not matchers and expr[match.end() :].lstrip().startswith("(")
        if calls or name in _NOT_METRICS:
            continue
        found.append(Selector(name, matchers))
    return found


def groupings(expr: str) -> list[set[str]]:
    """The label lists of every `by (...)` in `expr`."""
    without_strings = _STRING.sub('""', expr)
    return [
        {label.strip() for label in labels.split(",") if label.strip()}
        for keyword, labels in _GROUPING.findall(without_strings)
        if keyword == "by"
    ]


def test_the_promql_reader_finds_selectors_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (controller, le) (rate(a_bucket{x="y"}[5m]))) * 3.6e6'
        " > on (pod) max(b) or absent(c_total)"
    )
    assert selectors(expr) == [
        Selector("a_bucket", '{x="y"}'),
        Selector("b", ""),
        Selector("c_total", ""),
    ]
    assert groupings(expr) == [{"controller", "le"}]


# -- the dashboard ---------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8")
    )
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p.get("targets")]


def panel_exprs(panel: dict[str, Any]) -> list[str]:
    return [str(t["expr"]) for t in panel["targets"]]


@pytest.fixture(scope="module")
def exported() -> dict[str, Exported]:
    return controller_metrics()


def test_every_dashboard_expression_reads_metrics_the_controller_exports(
    exported: dict[str, Exported],
) -> None:
    used: set[str] = set()
    for panel in panels():
        for expr in panel_exprs(panel):
            names = {s.metric for s in selectors(expr)}
            assert names, f"{panel['title']}: no metric found in {expr}"
            assert names <= exported.keys(), f"{panel['title']}: {names - exported.keys()}"
            used |= names
    for variable in dashboard()["templating"]["list"]:
        if "definition" in variable:
            (metric,) = re.findall(r"label_values\((\w+),", variable["definition"])
            assert metric in exported, variable["name"]
    assert "climatik_decisions_total" in used


def test_per_config_panels_filter_by_config_and_keep_configs_apart(
    exported: dict[str, Exported],
) -> None:
    for panel in panels():
        for expr in panel_exprs(panel):
            per_config = [s for s in selectors(expr) if "config" in exported[s.metric].labels]
            for selector in per_config:
                assert CONFIG_FILTER in selector.matchers, f"{panel['title']}: {expr}"
            if per_config:
                # Summing or taking the max over configs would merge racks or targets that
                # share a name in different configs into one line.
                for labels in groupings(expr):
                    assert "config" in labels, f"{panel['title']}: {expr}"


_UNIT_WORDS = ("_watts", "_celsius", "_seconds", "_grams", "_per_joule")


def test_panels_of_metrics_with_units_say_their_unit() -> None:
    for panel in panels():
        metrics = {s.metric for e in panel_exprs(panel) for s in selectors(e)}
        if any(word in m for m in metrics for word in _UNIT_WORDS):
            unit = panel["fieldConfig"]["defaults"].get("unit", "")
            assert unit not in {"", "short", "none"}, panel["title"]
    by_metric = {s.metric: p for p in panels() for e in panel_exprs(p) for s in selectors(e)}
    tokens = by_metric["climatik_target_tokens_per_joule"]
    assert "joule" in tokens["title"].lower()
    assert "watt" not in tokens["title"].lower()


# -- the alert rules ------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8"))
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_every_alert_expression_reads_metrics_the_controller_exports(
    exported: dict[str, Exported],
) -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        names = {s.metric for s in selectors(rule["expr"])}
        assert names, rule["alert"]
        assert names <= exported.keys(), f"{rule['alert']}: {names - exported.keys()}"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_every_alert_links_an_absolute_runbook_section_that_exists() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert "runbook" not in annotations, rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == RUNBOOK_PAGE, rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in {OPERATIONS}"


# -- the docs -------------------------------------------------------------------------------


def test_the_metrics_table_lists_exactly_what_the_controller_exports(
    exported: dict[str, Exported],
) -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(climatik_\w+)` \| (\w+) \|([^|]*)\|", section, re.MULTILINE)
    documented = {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
    }
    defined = {
        m.name + ("_total" if m.kind == "counter" else ""): (m.kind, m.labels)
        for m in exported.values()
    }
    assert documented == defined
