"""The placement webhook starts serving when its certificate appears, without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from climatik.runtime import placement


async def test_serving_waits_for_the_certificate_then_proceeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement, "CERTIFICATE_POLL_S", 0.01)
    waiting = asyncio.create_task(placement._wait_for_certificate(tmp_path))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "no certificate yet: keep waiting"
    (tmp_path / "tls.crt").write_text("cert")
    await asyncio.sleep(0.05)
    assert not waiting.done(), "half a pair is not a pair"
    (tmp_path / "tls.key").write_text("key")
    cert, key = await asyncio.wait_for(waiting, 1)
    assert (cert.name, key.name) == ("tls.crt", "tls.key")
