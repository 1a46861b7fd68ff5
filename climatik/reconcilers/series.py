"""Per-config metric families kept as plain floats: the reconcilers' many series.

prometheus_client keeps one child object per series, with its own locks and label tuple (about
700 bytes each, and a validating `labels()` lookup on every set). At 5,000 configs with a dozen
rack and target series each, those children were most of what the controller held beyond its
informer caches. A family here keeps its values in a dict of dicts keyed by config, and is read
through prometheus_client's custom-collector interface when `/metrics` is scraped, so the
exposition is the same text. The first label of every family is the config key, which is what
makes forgetting a deleted config, or replacing one config's rack series in one step, cheap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Labels = tuple[str, ...]
"""The label values after the config's."""


class _Family(Collector):
    """Series of one metric, grouped by config (the first label)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        if not labelnames or labelnames[0] != "config":
            raise ValueError(f"{name}: the first label of a per-config family is 'config'")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[str, dict[Labels, float]] = {}
        if registry is not None:
            registry.register(self)

    def _labels(self, values: Sequence[str]) -> tuple[str, Labels]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        return str(values[0]), tuple(str(v) for v in values[1:])

    def labels(self, *values: str) -> _Series:
        """One series, by all its label values (config first), as prometheus_client spells it."""
        config, rest = self._labels(values)
        return _Series(self, config, rest)

    def value(self, *values: str) -> float | None:
        """The series' value, `None` when it is not set."""
        config, rest = self._labels(values)
        return self._values.get(config, {}).get(rest)

    def remove(self, *values: str) -> None:
        """Drop one series; `KeyError` when it is not there (as prometheus_client)."""
        config, rest = self._labels(values)
        series = self._values[config]
        del series[rest]
        if not series:
            del self._values[config]

    def forget(self, config: str) -> None:
        """Drop every series of `config`."""
        self._values.pop(config, None)

    def replace(self, config: str, series: Mapping[Labels, float]) -> None:
        """`config`'s series become exactly `series`: those not in it go, in one step, so a
        scrape never sees a round half written."""
        if any(len(rest) != len(self.labelnames) - 1 for rest in series):
            raise ValueError(f"{self.name}: label values after the config: {self.labelnames[1:]}")
        if series:
            self._values[config] = dict(series)
        else:
            self._values.pop(config, None)

    def configs(self) -> frozenset[str]:
        """The configs with a series."""
        return frozenset(self._values)

    def _set(self, config: str, rest: Labels, value: float) -> None:
        self._values.setdefault(config, {})[rest] = float(value)

    def _add(self, config: str, rest: Labels, amount: float) -> None:
        series = self._values.setdefault(config, {})
        series[rest] = series.get(rest, 0.0) + amount

    def _samples(self) -> Iterator[tuple[list[str], float]]:
        for config, series in list(self._values.items()):
            for rest, value in list(series.items()):
                yield [config, *rest], value


class ConfigGauge(_Family):
    """A gauge whose first label is the config."""

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self._samples():
            family.add_metric(labels, value)
        yield family


class ConfigCounter(_Family):
    """A counter whose first label is the config; exposed with `_total` and `_created` like a
    prometheus_client Counter."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry=registry)
        self._created: dict[tuple[str, Labels], float] = {}

    def _add(self, config: str, rest: Labels, amount: float) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        self._created.setdefault((config, rest), time.time())
        super()._add(config, rest, amount)

    def _set(self, config: str, rest: Labels, value: float) -> None:
        raise TypeError(f"{self.name} is a counter: inc() it")

    def remove(self, *values: str) -> None:
        super().remove(*values)
        self._created.pop(self._labels(values), None)

    def forget(self, config: str) -> None:
        for rest in self._values.get(config, {}):
            self._created.pop((config, rest), None)
        super().forget(config)

    def replace(self, config: str, series: Mapping[Labels, float]) -> None:
        raise TypeError(f"{self.name} is a counter: its series only go up or go")

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self._samples():
            created = self._created.get((labels[0], tuple(labels[1:])))
            family.add_metric(labels, value, created=created)
        yield family


class _Series:
    """One series of a family, as `family.labels(...)` returns it."""

    __slots__ = ("_config", "_family", "_rest")

    def __init__(self, family: _Family, config: str, rest: Labels) -> None:
        self._family = family
        self._config = config
        self._rest = rest

    def set(self, value: float) -> None:
        self._family._set(self._config, self._rest, value)

    def inc(self, amount: float = 1.0) -> None:
        self._family._add(self._config, self._rest, amount)
