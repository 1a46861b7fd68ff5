"""What a GPU-tuning run found and did, as the result ConfigMap carries it.

The contract between whoever sweeps a node's clocks (`climatik gpu-tune` on real or simulated
GPUs, or the demo's world playing the Job on the twin's physics) and the GPU-frequency
reconciler that reads the result (`policies.gpu_tuning.watts_scale`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from climatik.domain.gpu import (
    TUNE_NODE_LABEL,
    TUNE_RESULT_KEY,
    ClockChoice,
    ClockSample,
    GpuError,
    GpuInventory,
    node_label_value,
)

DEFAULT_SWEEP_POINTS = 8
"""How many SM clocks a sweep measures unless told otherwise."""
DEFAULT_SETTLE_S = 20.0
"""Seconds a sweep waits after locking a clock before it measures."""
DEFAULT_MEASURE_S = 30.0
"""Seconds a sweep measures power and tokens at each clock."""


class TuneMode(enum.StrEnum):
    """How far the Job may go."""

    DRY_RUN = "dry-run"
    """Read inventory and print the sweep plan; change nothing."""
    RECOMMEND = "recommend"
    """Sweep, report the best clock, then restore the defaults."""
    APPLY = "apply"
    """Sweep and keep the best clock locked."""
    LOCK = "lock"
    """Lock every GPU at a given SM clock; no sweep."""


@dataclass
class GpuTuneResult:
    """Everything a tuning run learned; serialised into the result ConfigMap."""

    mode: TuneMode
    inventory: list[GpuInventory]
    planned_clocks_mhz: list[int]
    samples: list[ClockSample] = field(default_factory=list)
    choice: ClockChoice | None = None
    applied_clock_mhz: int | None = None
    error: GpuError | None = None
    requested_clock_mhz: int | None = None
    """The clock a lock was asked for; `applied_clock_mhz` is the supported one it got."""

    @property
    def succeeded(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON form for ConfigMaps, logs and the controller."""

        def sample(s: ClockSample) -> dict[str, Any]:
            return {
                "clockMHz": s.clock_mhz,
                "watts": round(s.watts, 2),
                "tokensPerSecond": round(s.tokens_per_s, 3),
                "tokensPerJoule": round(s.tokens_per_joule, 5),
                "p99TokenLatencySeconds": s.p99_token_latency_s,
            }

        result: dict[str, Any] = {
            "mode": str(self.mode),
            "gpus": [
                {
                    "index": g.index,
                    "uuid": g.uuid,
                    "name": g.name,
                    "smClockMHz": g.sm_clock_mhz,
                    "supportedSmClocksMHz": [
                        max(g.supported_sm_clocks_mhz, default=0),
                        min(g.supported_sm_clocks_mhz, default=0),
                    ],
                    "powerWatts": round(g.power_w, 2),
                    "powerLimitWatts": g.power_limit_w,
                    "powerLimitRangeWatts": list(g.power_limit_range_w),
                }
                for g in self.inventory
            ],
            "plannedClocksMHz": self.planned_clocks_mhz,
            "samples": [sample(s) for s in self.samples],
            "appliedClockMHz": self.applied_clock_mhz,
        }
        if self.requested_clock_mhz is not None:
            result["requestedClockMHz"] = self.requested_clock_mhz
        if self.choice is not None:
            result["choice"] = {
                "clockMHz": self.choice.clock_mhz,
                "reason": self.choice.reason,
                "before": sample(self.choice.baseline),
                "after": sample(self.choice.chosen),
                "tokensPerJouleGain": round(self.choice.tokens_per_joule_gain, 4),
                "throughputLoss": round(self.choice.throughput_loss, 4),
            }
        if self.error is not None:
            result["error"] = {"reason": self.error.reason, "message": self.error.message}
        return result


def lock_clock_mhz(supported_mhz: Iterable[int], requested_mhz: int) -> int:
    """The clock a lock takes: the highest supported one not above the request, so a power
    budget is never overshot; the lowest when the request is below them all.

    Raises ValueError for an empty `supported_mhz`."""
    supported = sorted(supported_mhz)
    if not supported:
        msg = "no supported SM clock to lock"
        raise ValueError(msg)
    return max((c for c in supported if c <= requested_mhz), default=supported[0])


def result_configmap(namespace: str, name: str, document: dict[str, Any]) -> dict[str, Any]:
    """The result ConfigMap for a run's JSON document (labelled with the node it tuned)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {TUNE_NODE_LABEL: node_label_value(document.get("node") or "unknown")},
        },
        "data": {TUNE_RESULT_KEY: json.dumps(document)},
    }
