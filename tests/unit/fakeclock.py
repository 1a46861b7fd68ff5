"""A manual clock for unit tests of time-driven mechanisms (shared by the kube tests)."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s
        self.slept_s: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds

    async def sleep(self, seconds: float) -> None:
        """An ``asyncio.sleep`` replacement: time jumps, the loop still turns once."""
        self.slept_s.append(seconds)
        self.now_s += seconds
        await asyncio.sleep(0)
