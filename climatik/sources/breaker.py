"""A circuit breaker per remote server: a dead server fails fast instead of eating deadlines.

Configs in any namespace choose the Prometheus the controller asks. Without a breaker, twenty
configs pointing at a server that never answers cost a 5 s timeout per query per reconcile, and
the shared workers spend their time waiting on it while other tenants' caps go stale. With one:

- closed: requests go through. A request that timed out or could not connect opens it;
- open: requests are refused at once for a cool-down (`initial_cooldown_s`, doubling with each
  failed probe up to `max_cooldown_s`), and the refusal says since when and when it retries;
- when the cool-down has passed, ONE request is let through as a probe (the others are still
  refused while it runs): its success closes the breaker, its failure opens it again for the
  next, longer cool-down. Any success closes it.

It is a sans-I/O state machine: callers `admit()` before a request and `record()` its outcome
with the ticket they were given; the clock is injected.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    initial_cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_cooldown_s) and self.initial_cooldown_s > 0):
            raise ValueError("initial_cooldown_s must be a positive number")
        if not (math.isfinite(self.max_cooldown_s) and self.max_cooldown_s > 0):
            raise ValueError("max_cooldown_s must be a positive number")

    def cooldown_s(self, failures: int) -> float:
        """The cool-down after `failures` consecutive failures (at least one)."""
        doublings = min(max(0, failures - 1), 32)  # beyond that the maximum binds anyway
        return min(self.max_cooldown_s, self.initial_cooldown_s * float(2**doublings))


class Outcome(enum.Enum):
    SUCCESS = "success"
    """The server answered (an error answer too: it is alive)."""
    FAILURE = "failure"
    """The server did not answer: timeout, connection refused or broken, name not resolved."""
    NEUTRAL = "neutral"
    """Nothing was learned about the server (the request was refused locally or cancelled)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one request; `probe` when it is the one request after a cool-down."""

    probe: bool


class CircuitOpenError(Exception):
    """The breaker refuses requests for now; the fields say why and until when."""

    def __init__(self, last_failure: str, failed_ago_s: float, retry_in_s: float | None) -> None:
        self.last_failure = last_failure
        self.failed_ago_s = failed_ago_s
        self.retry_in_s = retry_in_s
        """Seconds until a probe is let through; None while a probe is running."""
        when = (
            "a probe request is running"
            if retry_in_s is None
            else f"next try in {retry_in_s:.0f} s"
        )
        super().__init__(
            f"failing fast since its last failure {failed_ago_s:.0f} s ago ({last_failure}); "
            + when
        )


class CircuitBreaker:
    """The breaker of one server."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings if settings is not None else BreakerSettings()
        self._clock = clock
        self._failures = 0
        self._failed_at = 0.0
        self._open_until = 0.0
        self._last_failure = ""
        self._probing = False
        self._in_flight = 0

    @property
    def is_closed(self) -> bool:
        return self._failures == 0

    @property
    def forgettable(self) -> bool:
        """Closed and with no request out: dropping it loses nothing (a request still out may
        yet time out, and that failure must open this breaker, not a fresh one)."""
        return self._failures == 0 and self._in_flight == 0

    def admit(self) -> Ticket:
        """A ticket for one request, or `CircuitOpenError` while the breaker is open."""
        if self._failures == 0:
            self._in_flight += 1
            return Ticket(probe=False)
        now = self._clock()
        if now < self._open_until:
            raise CircuitOpenError(
                self._last_failure, now - self._failed_at, self._open_until - now
            )
        if self._probing:
            raise CircuitOpenError(self._last_failure, now - self._failed_at, None)
        self._probing = True
        self._in_flight += 1
        return Ticket(probe=True)

    def record(self, ticket: Ticket, outcome: Outcome, detail: str = "") -> None:
        """What became of the request `ticket` admitted; `detail` says why it failed."""
        self._in_flight -= 1
        if ticket.probe:
            self._probing = False
        if outcome is Outcome.SUCCESS:
            self._failures = 0
            self._open_until = 0.0
            return
        if outcome is Outcome.NEUTRAL:
            return
        if self._failures and not ticket.probe:
            # A request admitted before the breaker opened failed too: the same outage, not a
            # reason for a longer cool-down.
            return
        self._failures += 1
        self._failed_at = self._clock()
        self._open_until = self._failed_at + self._settings.cooldown_s(self._failures)
        self._last_failure = detail or "no answer"
