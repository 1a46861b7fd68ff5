"""Prometheus's text exposition format, the parts every exporter family shares: HELP/TYPE
headers, escaped label values, special float values and per-sample timestamps.

A pod served with timestamps (`timestamped`) carries the scrape's time on each sample; a frozen
one keeps the time it froze, so Prometheus holds samples that grow old without marking them stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from climatik.world.readings import PodReadings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def header(metric: str, kind: str, help_text: str) -> Iterator[str]:
    yield f"# HELP {metric} {help_text}"
    yield f"# TYPE {metric} {kind}"


@dataclass(frozen=True, slots=True)
class Scrape:
    """One scrape's moment: the epoch milliseconds timestamped samples carry."""

    now_ms: int

    def sample(
        self, metric: str, labels: Mapping[str, str], value: float, pod: PodReadings | None = None
    ) -> str:
        """One sample line; a pod's timestamp rules apply when the sample is the pod's."""
        rendered = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
        suffix = ""
        if pod is not None and pod.frozen_at_ms is not None:
            suffix = f" {pod.frozen_at_ms}"
        elif pod is not None and pod.timestamped:
            suffix = f" {self.now_ms}"
        return f"{metric}{{{rendered}}} {format_value(value)}{suffix}"
