"""Rate limiters for requeues after failures: client-go's defaults, a three-method interface.

``when(key)`` returns how long to wait before the key may be processed again (and records the
failure), ``forget(key)`` clears the key's history after a success, ``num_requeues(key)`` says how
many failures are counted. The default controller limiter is the larger of a per-key exponential
backoff (5 ms doubling to 1000 s: one broken object backs off alone) and a global token bucket
(10 qps, burst 100: a mass failure cannot hammer the API server). Time comes from an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Protocol


class RateLimiter(Protocol):
    def when(self, key: Hashable) -> float: ...

    def forget(self, key: Hashable) -> None: ...

    def num_requeues(self, key: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    """Per key: ``base_delay_s * 2**failures``, capped at ``max_delay_s``."""

    def __init__(self, base_delay_s: float = 0.005, max_delay_s: float = 1000.0) -> None:
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # Cap the exponent too, so a key failing for days cannot overflow the float.
        if failures > 64:
            return self.max_delay_s
        return float(min(self.base_delay_s * 2.0**failures, self.max_delay_s))

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter:
    """A global token bucket (``qps`` refill, ``burst`` capacity); reservations may go into debt."""

    def __init__(
        self, qps: float = 10.0, burst: int = 100, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: Hashable) -> float:
        del key  # one bucket for every key
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: Hashable) -> None:
        del key

    def num_requeues(self, key: Hashable) -> int:
        del key
        return 0


class MaxOfRateLimiter:
    """The longest wait any of its limiters asks for; every limiter records every failure."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, key: Hashable) -> float:
        return max(limiter.when(key) for limiter in self.limiters)

    def forget(self, key: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_controller_rate_limiter(
    *, clock: Callable[[], float] = time.monotonic
) -> MaxOfRateLimiter:
    """client-go's ``DefaultControllerRateLimiter``: exponential 5 ms-1000 s, max-of 10 qps/100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, clock=clock)
    )
