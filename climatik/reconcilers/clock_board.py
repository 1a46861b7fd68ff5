"""The hand-over of GPU clocks between the GPU-tuning and power-cap reconcilers.

The GPU-tuning reconciler reads the tuning Jobs' results and posts, per target, what they told
(`ClockProfile`: a sweep of one of its nodes, the clock its nodes run); the power-cap reconciler
decides each target's clock with its replicas (`clock_round.clocks_for_round`) and posts the
request, which the GPU-tuning reconciler carries out with a lock Job per node. Neither
reconciler imports the other: both import this board, one per manager
(`climatik.runtime.capping.clock_board`), like `TuningHints`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from climatik.policies.clock_round import ClockProfile


@dataclass
class ClockBoard:
    """Per config: the targets' clock profiles and the clocks requested for them."""

    _profiles: dict[str, dict[str, ClockProfile]] = field(default_factory=dict)
    _requests: dict[str, dict[str, int]] = field(default_factory=dict)

    def post_profiles(self, config_key: str, profiles: Mapping[str, ClockProfile]) -> None:
        """What the latest results tell about each target's clocks (replacing the last post)."""
        self._profiles[config_key] = dict(profiles)

    def profiles(self, config_key: str) -> dict[str, ClockProfile]:
        return dict(self._profiles.get(config_key, {}))

    def request(self, config_key: str, clocks: Mapping[str, int]) -> None:
        """The clocks the power-cap reconciler decided (replacing the last request)."""
        self._requests[config_key] = dict(clocks)

    def requested(self, config_key: str) -> dict[str, int]:
        return dict(self._requests.get(config_key, {}))

    def forget(self, config_key: str) -> None:
        """A config gone or no longer moving clocks: nothing is requested for it."""
        self._profiles.pop(config_key, None)
        self._requests.pop(config_key, None)
