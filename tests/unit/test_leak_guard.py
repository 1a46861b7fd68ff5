"""The leaked-task guard in tests/conftest.py fails tests that leave tasks behind."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).parents[1] / "conftest.py"


def test_a_leaking_test_fails_and_a_tidy_one_passes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text().replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(
        """
        import asyncio

        async def test_leaks():
            asyncio.create_task(asyncio.sleep(3600), name="forgotten-watch")

        async def test_tidy():
            task = asyncio.create_task(asyncio.sleep(0))
            await task
        """
    )
    result = pytester.runpytest_subprocess(
        "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    # The leaking test body passes; the guard turns its teardown into an error.
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*leaked 1 asyncio task(s): forgotten-watch*"])
