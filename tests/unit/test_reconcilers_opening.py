"""The reconcile opening the four config reconcilers share: gone, invalid, being deleted, opened."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from climatik.kube.store import FrozenMapping
from climatik.reconcilers.opening import ConfigOpening, Opened
from climatik.reconcilers.result import Result, TerminalError
from tests.json_paths import dig, text_at
from tests.unit.helpers.placement_objects import NS, config
from tests.unit.helpers.status_world import StoreCache

KEY = f"{NS}/cap"


def invalid() -> dict[str, Any]:
    """A spec `config_from_object` refuses (a percentage over 100)."""
    return config(policy={"holdingThresholdPercent": 250})


class Recorder:
    """Records what the opening asked of the reconciler."""

    def __init__(self) -> None:
        self.forgotten: list[str] = []
        self.reported: list[tuple[str, str]] = []
        self.finalized: list[str] = []

    def forget(self, key: str) -> None:
        self.forgotten.append(key)

    async def report_invalid(self, obj: FrozenMapping, problem: str) -> None:
        self.reported.append((text_at(obj, "metadata", "name"), problem))

    async def finalize(self, key: str, obj: FrozenMapping) -> Result:
        self.finalized.append(key)
        return Result(requeue_after=3.0)


def deleting(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {**obj["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}
    return {**obj, "metadata": meta}


def opening(recorder: Recorder, *objs: dict[str, Any], reports: bool = False) -> ConfigOpening:
    return ConfigOpening(
        StoreCache(*objs),
        forget=recorder.forget,
        report_invalid=recorder.report_invalid if reports else None,
        finalize=recorder.finalize if reports else None,
    )


async def test_a_valid_config_opens_with_its_parsed_spec() -> None:
    recorder = Recorder()
    opened = await opening(recorder, config()).open(KEY)
    assert isinstance(opened, Opened)
    assert opened.config.key == KEY
    assert opened.config.power_cap_w == 100_000
    assert dig(opened.obj, "metadata", "resourceVersion") == "7"
    assert recorder.forgotten == []


@pytest.mark.parametrize("reports", [False, True])
async def test_a_config_gone_from_the_cache_is_forgotten(reports: bool) -> None:
    recorder = Recorder()
    assert await opening(recorder, config(), reports=reports).open(f"{NS}/other") == Result()
    assert recorder.forgotten == [f"{NS}/other"]
    assert recorder.finalized == []


async def test_without_a_reporter_an_invalid_spec_is_stood_aside_from() -> None:
    recorder = Recorder()
    assert await opening(recorder, invalid()).open(KEY) == Result()
    assert recorder.forgotten == [KEY]
    assert recorder.reported == []


async def test_the_reporter_tells_of_an_invalid_spec_and_the_reconcile_ends_terminally() -> None:
    recorder = Recorder()
    with pytest.raises(TerminalError, match=rf"^{KEY}: spec\.policy\.holdingThresholdPercent"):
        await opening(recorder, invalid(), reports=True).open(KEY)
    ((name, message),) = recorder.reported
    assert name == "cap"
    assert "spec.policy.holdingThresholdPercent" in message
    assert recorder.forgotten == []  # what it holds is still given back by its records


async def test_a_config_being_deleted_is_finalized_before_its_spec_is_read() -> None:
    """An invalid spec must not keep a deleted config's finalizer (and its caps) in place."""
    recorder = Recorder()
    result = await opening(recorder, deleting(invalid()), reports=True).open(KEY)
    assert result == Result(requeue_after=3.0)
    assert recorder.finalized == [KEY]
    assert recorder.reported == []


async def test_without_a_finalizer_a_config_being_deleted_is_reconciled_until_gone() -> None:
    recorder = Recorder()
    opened = await opening(recorder, deleting(config())).open(KEY)
    assert isinstance(opened, Opened)
    assert recorder.finalized == []
