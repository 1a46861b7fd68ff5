"""The hand-over from the GPU-tuning reconciler to the power-cap reconciler.

A tuning Job that applied a clock measured how much a replica's power changed; the GPU-tuning
reconciler records that scale per config and the power-cap reconciler takes it on its next
reconcile (`rescale_watts_per_replica`). Neither reconciler imports the other: both import this
mailbox, one per manager (`climatik.runtime.capping.tuning_hints`). It is shared mutable state
between two controllers of one process, not a value, hence here and not in `domain/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TuningHints:
    """Power-per-replica changes measured by tuning Jobs, handed to the power-cap reconciler."""

    _pending: dict[str, list[float]] = field(default_factory=dict)

    def record(self, config_key: str, watts_scale: float) -> None:
        self._pending.setdefault(config_key, []).append(watts_scale)

    def take(self, config_key: str) -> float | None:
        """The mean scale of results not yet applied (each result is applied once)."""
        scales = self._pending.pop(config_key, None)
        return sum(scales) / len(scales) if scales else None
