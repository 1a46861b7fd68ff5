"""Per-config metric families expose what a prometheus_client Gauge or Counter would.

`reconcilers/series.py` replaces prometheus_client's per-series child objects with plain floats
for memory; dashboards and alerts must not see the difference. A random sequence of sets,
increments and removals is applied to both, and the scraped text compared (without the
`_created` timestamps, which differ by when each was made).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from climatik.reconcilers.series import ConfigCounter, ConfigGauge

CONFIGS = ("a/one", "a/two", "b/one")
RACKS = ("rack-a", "rack-b")

operations = st.lists(
    st.tuples(
        st.sampled_from(("set", "inc", "remove")),
        st.sampled_from(CONFIGS),
        st.sampled_from(RACKS),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
    ),
    max_size=40,
)


def scraped(registry: CollectorRegistry) -> list[str]:
    """The exposition's lines, in order (series order within a family means nothing to
    Prometheus: ours are grouped by config)."""
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


@given(operations)
def test_a_config_gauge_scrapes_as_a_prometheus_gauge(
    ops: list[tuple[str, str, str, float]],
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = ConfigGauge("x_watts", "Watts.", ["config", "rack"], registry=ours)
    gauge = Gauge("x_watts", "Watts.", ["config", "rack"], registry=theirs)
    for op, config, rack, value in ops:
        if op == "remove":
            had = family.value(config, rack) is not None
            try:
                gauge.remove(config, rack)
            except KeyError:
                assert not had
            if had:
                family.remove(config, rack)
            else:
                with pytest.raises(KeyError):
                    family.remove(config, rack)
        elif op == "set":
            family.labels(config, rack).set(value)
            gauge.labels(config, rack).set(value)
        else:
            family.labels(config, rack).inc(value)
            gauge.labels(config, rack).inc(value)
    assert scraped(ours) == scraped(theirs)


@given(operations)
def test_a_config_counter_scrapes_as_a_prometheus_counter(
    ops: list[tuple[str, str, str, float]],
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = ConfigCounter("x_posts_total", "Posts.", ["config", "rack"], registry=ours)
    counter = Counter("x_posts_total", "Posts.", ["config", "rack"], registry=theirs)
    for op, config, rack, value in ops:
        if op == "remove":
            had = family.value(config, rack) is not None
            try:
                counter.remove(config, rack)
            except KeyError:
                assert not had
            if had:
                family.remove(config, rack)
        else:
            family.labels(config, rack).inc(value)
            counter.labels(config, rack).inc(value)
    assert scraped(ours) == scraped(theirs)
    created = re.findall(r"x_posts_created\{([^}]*)\}", generate_latest(ours).decode())
    held = [(c, r) for c in CONFIGS for r in RACKS if family.value(c, r) is not None]
    assert len(created) == len(held)


def test_replace_swaps_one_configs_series_and_leaves_the_others() -> None:
    registry = CollectorRegistry()
    family = ConfigGauge("x_watts", "Watts.", ["config", "rack"], registry=registry)
    family.labels("a/one", "rack-a").set(1)
    family.labels("a/one", "rack-b").set(2)
    family.labels("b/one", "rack-a").set(3)
    family.replace("a/one", {("rack-b",): 5, ("rack-c",): 6})
    assert family.value("a/one", "rack-a") is None  # a rack gone loses its series
    assert (family.value("a/one", "rack-b"), family.value("a/one", "rack-c")) == (5, 6)
    assert family.value("b/one", "rack-a") == 3
    family.replace("a/one", {})
    assert family.configs() == {"b/one"}
    with pytest.raises(ValueError, match="label values after the config"):
        family.replace("a/one", {("rack-a", "extra"): 1})


def test_forget_drops_every_series_of_one_config() -> None:
    registry = CollectorRegistry()
    counter = ConfigCounter("x_posts_total", "Posts.", ["config", "result"], registry=registry)
    counter.labels("a/one", "sent").inc()
    counter.labels("a/one", "error").inc(2)
    counter.labels("b/one", "sent").inc()
    counter.forget("a/one")
    assert counter.configs() == {"b/one"}
    assert registry.get_sample_value("x_posts_total", {"config": "a/one", "result": "sent"}) is None
    assert registry.get_sample_value("x_posts_total", {"config": "b/one", "result": "sent"}) == 1


def test_misuse_is_refused() -> None:
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="first label"):
        ConfigGauge("x", "X.", ["rack"], registry=registry)
    counter = ConfigCounter("y_total", "Y.", ["config"], registry=registry)
    with pytest.raises(ValueError, match="only goes up"):
        counter.labels("a/one").inc(-1)
    with pytest.raises(TypeError, match="counter"):
        counter.labels("a/one").set(3)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("a/one", "extra")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ConfigGauge("y_total", "Y again.", ["config"], registry=registry)
