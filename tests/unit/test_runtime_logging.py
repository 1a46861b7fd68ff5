"""Logged tracebacks name the frames but never render their local variables: a request's
headers (an API key), a Secret's data or a token in scope when something raised must not end
up in the controller's logs, in JSON or on the console."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog

from climatik.runtime.logging import configure_logging

SECRET = "sk-live-4f9a0c2e7b1d"


def _call_the_provider() -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    api_key = SECRET
    raise RuntimeError(f"provider refused a request with {len(headers)} header(s), {len(api_key)}")


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_traceback_carries_no_frame_locals(fmt: str, reset_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", fmt, stream)
    try:
        _call_the_provider()
    except RuntimeError:
        structlog.get_logger("test").exception("carbon_fetch_failed")
    out = stream.getvalue()
    assert "carbon_fetch_failed" in out
    assert "_call_the_provider" in out, "the traceback itself is still logged"
    assert "provider refused" in out
    assert SECRET not in out
