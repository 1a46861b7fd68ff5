"""Fixtures shared by every test tier.

`_no_leaked_tasks` fails any async test that leaves asyncio tasks running: a leaked task is a
watcher or worker that would keep running in the real controller after its owner stopped.
`_structlog_restored` undoes the logging set-up of a test that ran the command line in-process
(it configures structlog for the stderr pytest captured, closed once the test ends).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    # Give tasks cancelled during teardown one loop turn to finish unwinding.
    await asyncio.sleep(0)
    leaked = {
        task
        for task in asyncio.all_tasks() - before
        if task is not asyncio.current_task() and not task.done()
    }
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(task.get_name() for task in leaked))
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {names}")


@pytest.fixture(autouse=True)
def _structlog_restored() -> Iterator[None]:
    config = structlog.get_config()
    yield
    structlog.configure(**config)
