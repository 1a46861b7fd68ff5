"""The hand-over from the GPU-tuning reconciler to the power-cap reconciler.

A tuning Job that applied a clock measured how much a replica's power changed on its node; the
GPU-tuning reconciler records what that means for each target of the config (the share of its
replicas on the node) and the power-cap reconciler takes it on its next
reconcile (`rescale_watts_per_replica`). Neither reconciler imports the other: both import this
mailbox, one per manager (`climatik.runtime.capping.tuning_hints`). It is shared mutable state
between two controllers of one process, not a value, hence here and not in `domain/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class TuningHints:
    """Power-per-replica changes measured by tuning Jobs, handed to the power-cap reconciler."""

    _pending: dict[str, dict[str, float]] = field(default_factory=dict)

    def record(self, config_key: str, target_scales: Mapping[str, float]) -> None:
        """Targets' power scales from results about other nodes than any pending ones: each
        applies on top of the others (their product)."""
        pending = self._pending.setdefault(config_key, {})
        for target, scale in target_scales.items():
            pending[target] = pending.get(target, 1.0) * scale

    def take(self, config_key: str) -> dict[str, float] | None:
        """Each target's scale from results not yet applied (each result is applied once)."""
        return self._pending.pop(config_key, None) or None
