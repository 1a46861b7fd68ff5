"""Waiting for a condition in integration tests, with the last value in the failure message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.5,
) -> T:
    """Call `probe` until `accept` holds for its value; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s:g} s; last value: {value!r}")
        await asyncio.sleep(interval_s)
