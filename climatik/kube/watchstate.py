"""The reflector's memory, kept apart from the network: a small sans-I/O state machine.

The network code (``reflector.py``) feeds this class what happened (a list finished, a watch
opened, an event or bookmark arrived, the server said 410 Gone, a connection broke) and asks it what
to do next (relist or resume watching, from which resourceVersion, how long to back off, whether the
watch has gone silent for too long). Nothing here sleeps, reads a socket or looks at the wall clock:
time comes from an injected monotonic clock and randomness from an injected ``random.Random``, so
every rule is unit-tested with a fake clock.

Guarantees:
- A watch always resumes from the newest resourceVersion seen (list, event or bookmark).
- 410 Gone (an HTTP status or an ERROR event) forgets the resourceVersion and asks for a relist.
- A watch that delivered nothing (not even a bookmark) for ``inactivity_timeout_s`` is declared
  dead (kopf's long story of silent stalls is why).
- Reconnect delays, and the delays before a relist after 410 Gone, follow client-go's backoff
  manager: 0.8 s doubling to 30 s, each multiplied by ``1 + jitter * U[0, 1)``, reset after
  ``backoff_reset_s`` without failure.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HTTP_GONE = 410


class WatchEventType(enum.StrEnum):
    """The ``type`` of a line in a Kubernetes watch stream."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"
    ERROR = "ERROR"


class Next(enum.Enum):
    """What the reflector must do after feeding an event in."""

    DELIVER = "deliver"  # hand the object to the store
    SKIP = "skip"  # a bookmark: remembered, nothing to deliver
    RELIST = "relist"  # 410 Gone: the stream is over, list from scratch
    RECONNECT = "reconnect"  # another server-side error: the stream is over, watch again


@dataclass(frozen=True)
class WatchSettings:
    """Timing rules of list-watch; client-go's and kopf's lessons as defaults."""

    inactivity_timeout_s: float = 90.0
    server_timeout_min_s: int = 300
    server_timeout_max_s: int = 600
    backoff_initial_s: float = 0.8
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    backoff_jitter: float = 1.0
    backoff_reset_s: float = 120.0


def is_gone_status(status: Mapping[str, Any]) -> bool:
    """Whether a ``Status`` object (from an ERROR event or an error body) means 410 Gone."""
    return status.get("code") == HTTP_GONE or status.get("reason") in {"Expired", "Gone"}


class WatchState:
    """Resource version, relist flag, inactivity deadline and reconnect backoff of one reflector."""

    def __init__(
        self,
        settings: WatchSettings | None = None,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or WatchSettings()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.resource_version: str | None = None
        self.needs_relist = True
        self._last_activity = clock()
        self._failures = 0
        self._last_failure_at: float | None = None

    # -- list -------------------------------------------------------------------------------

    def list_completed(self, resource_version: str) -> None:
        """A full list succeeded: watch from its resourceVersion."""
        self.resource_version = resource_version
        self.needs_relist = False
        self._last_activity = self._clock()

    # -- watch ------------------------------------------------------------------------------

    def server_timeout_s(self) -> int:
        """The next watch's ``timeoutSeconds``, random so replicas do not reconnect together."""
        return self._rng.randint(
            self.settings.server_timeout_min_s, self.settings.server_timeout_max_s
        )

    def watch_opened(self) -> None:
        """The server accepted the watch: the inactivity clock starts now."""
        self._last_activity = self._clock()

    def event_received(self, event_type: str, obj: Mapping[str, Any]) -> Next:
        """Remember what an event tells about the stream and say what to do with it."""
        self._last_activity = self._clock()
        if event_type == WatchEventType.ERROR:
            if is_gone_status(obj):
                self.gone()
                return Next.RELIST
            return Next.RECONNECT
        metadata = obj.get("metadata") or {}
        resource_version = metadata.get("resourceVersion")
        if resource_version:
            self.resource_version = str(resource_version)
        if event_type == WatchEventType.BOOKMARK:
            return Next.SKIP
        return Next.DELIVER

    def gone(self) -> None:
        """The server no longer has our resourceVersion (410): relist from scratch."""
        self.resource_version = None
        self.needs_relist = True

    def seconds_until_silent(self) -> float:
        """Seconds left before the current watch counts as dead (may be negative)."""
        return self._last_activity + self.settings.inactivity_timeout_s - self._clock()

    def is_silent(self) -> bool:
        """Whether the watch has delivered nothing for longer than the inactivity timeout."""
        return self.seconds_until_silent() <= 0

    # -- failures and backoff ---------------------------------------------------------------

    def succeeded(self) -> None:
        """A list or a watch connection worked; the backoff resets once failures are old."""
        if (
            self._last_failure_at is not None
            and self._clock() - self._last_failure_at >= self.settings.backoff_reset_s
        ):
            self._failures = 0
            self._last_failure_at = None

    def failed(self) -> float:
        """A list or watch failed (network, timeout, server error, 410 Gone): return the delay
        to wait before the next list or watch."""
        now = self._clock()
        if (
            self._last_failure_at is not None
            and now - self._last_failure_at >= self.settings.backoff_reset_s
        ):
            self._failures = 0
        base_s = min(
            self.settings.backoff_initial_s * self.settings.backoff_factor**self._failures,
            self.settings.backoff_max_s,
        )
        self._failures += 1
        self._last_failure_at = now
        return base_s * (1.0 + self.settings.backoff_jitter * self._rng.random())

    @property
    def consecutive_failures(self) -> int:
        """Failures counted toward the current backoff step."""
        return self._failures
