"""The reflector's control flow over a scripted client: resume, 410 relist, silence, errors.

The client here is a stand-in for the transport only (pages and byte chunks); the real API server
is exercised by tests/integration/test_runtime_informer.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from climatik.kube.client import ApiError
from climatik.kube.informer import EventHandlers, Informer, strip_managed_fields
from climatik.kube.reflector import RawObject, Reflector
from climatik.kube.resources import CONFIGMAPS
from climatik.kube.watchstate import WatchEventType, WatchSettings
from tests.json_paths import obj_at, text_at
from tests.unit.fakeclock import FakeClock

HANG = object()


def _cm(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"


class _Content:
    def __init__(self, script: list[Any]) -> None:
        self.script = script

    async def readany(self) -> bytes:
        if not self.script:
            return b""
        step = self.script.pop(0)
        if step is HANG:
            await asyncio.sleep(3600)
        if callable(step):  # something that happens between two reads (time passing)
            step()
            return await self.readany()
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, bytes)
        return step


class _Response:
    def __init__(self, script: list[Any]) -> None:
        self.content = _Content(script)
        self.closed = False

    def close(self) -> None:
        self.closed = True


class ScriptedClient:
    """Answers lists from ``lists`` and watches from ``watches``, recording the queries."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_calls = 0
        self.watch_versions: list[str | None] = []
        self.responses: list[_Response] = []
        self.done = asyncio.Event()

    async def list(self, resource: Any, namespace: Any, **kw: Any) -> dict[str, Any]:
        items = self.lists[min(self.list_calls, len(self.lists) - 1)]
        self.list_calls += 1
        rv = max((int(i["metadata"]["resourceVersion"]) for i in items), default=1)
        return {"kind": "ConfigMapList", "metadata": {"resourceVersion": str(rv)}, "items": items}

    async def open_stream(self, path: str, query: dict[str, Any], client_timeout: Any) -> _Response:
        self.watch_versions.append(query["resourceVersion"])
        if not self.watches:
            self.done.set()
            await asyncio.sleep(3600)
        step = self.watches.pop(0)
        if isinstance(step, BaseException):
            raise step
        response = _Response(list(step))
        self.responses.append(response)
        return response


async def _run_until_done(informer: Informer, client: ScriptedClient) -> None:
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(client.done.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _informer(client: ScriptedClient, **settings: Any) -> tuple[Informer, list[tuple[str, str]]]:
    events: list[tuple[str, str]] = []
    informer = Informer(
        client,  # type: ignore[arg-type]
        CONFIGMAPS,
        settings=WatchSettings(backoff_initial_s=0.01, backoff_jitter=0.0, **settings),
    )
    informer.add_handlers(
        EventHandlers(
            on_add=lambda o: events.append(("add", text_at(o, "metadata", "name"))),
            on_update=lambda _o, n: events.append(("update", text_at(n, "metadata", "name"))),
            on_delete=lambda o: events.append(("delete", text_at(o, "metadata", "name"))),
        )
    )
    return informer, events


async def test_events_split_across_chunks_are_applied_and_bookmarks_move_the_version() -> None:
    modified = _line("MODIFIED", _cm("a", "5"))
    client = ScriptedClient(
        lists=[[_cm("a", "2"), _cm("b", "3")]],
        watches=[
            [modified[:10], modified[10:] + _line("BOOKMARK", _cm("", "9"))],  # then EOF
        ],
    )
    informer, events = _informer(client)
    await _run_until_done(informer, client)
    assert events == [("add", "a"), ("add", "b"), ("update", "a")]
    assert client.watch_versions == ["3", "9"]  # resumed from the bookmark after a clean end
    assert client.list_calls == 1
    assert all(r.closed for r in client.responses)


async def test_gone_event_relists_and_reports_objects_deleted_meanwhile() -> None:
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    client = ScriptedClient(
        lists=[[_cm("a", "2"), _cm("b", "3")], [_cm("b", "3"), _cm("c", "20")]],
        watches=[[_line("ERROR", gone)]],
    )
    informer, events = _informer(client)
    await _run_until_done(informer, client)
    assert client.list_calls == 2
    assert events == [("add", "a"), ("add", "b"), ("delete", "a"), ("add", "c")]
    assert sorted(informer.store.keys()) == ["ns/b", "ns/c"]
    assert client.watch_versions == ["3", "20"]


async def test_gone_on_open_relists() -> None:
    client = ScriptedClient(
        lists=[[_cm("a", "2")], [_cm("a", "7")]],
        watches=[ApiError(410, {"reason": "Expired"})],
    )
    informer, events = _informer(client)
    await _run_until_done(informer, client)
    assert client.list_calls == 2
    assert events == [("add", "a"), ("update", "a")]


async def test_a_silent_watch_is_reopened_after_the_inactivity_timeout() -> None:
    client = ScriptedClient(lists=[[_cm("a", "2")]], watches=[[HANG]])
    informer, _ = _informer(client, inactivity_timeout_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _run_until_done(informer, client)
    assert client.watch_versions == ["2", "2"]
    assert 0.2 <= loop.time() - started < 1.0
    assert client.responses[0].closed


async def test_connection_errors_back_off_and_resume_from_the_last_version() -> None:
    client = ScriptedClient(
        lists=[[_cm("a", "2")]],
        watches=[
            [_line("MODIFIED", _cm("a", "4")), aiohttp.ClientPayloadError("cut")],
            aiohttp.ClientConnectionError("refused"),
            ApiError(500, {"reason": "InternalError"}),
            [_line("MODIFIED", _cm("a", "6"))],
        ],
    )
    informer, events = _informer(client)
    await _run_until_done(informer, client)
    assert client.list_calls == 1  # no relist for ordinary failures
    assert client.watch_versions == ["2", "4", "4", "4", "6"]
    assert events == [("add", "a"), ("update", "a"), ("update", "a")]
    assert informer.reflector.state.consecutive_failures == 3


class _CountingSink:
    def __init__(self) -> None:
        self.lists = 0

    def replace(self, objs: list[RawObject], resource_version: str) -> None:
        self.lists += 1

    def apply(self, event_type: WatchEventType, obj: RawObject) -> None:
        pass


async def test_a_server_answering_410_in_a_loop_is_relisted_with_backoff() -> None:
    """410 Gone on open or as an event: relist after 0.8 s, 1.6 s, ... like any failure, and
    the count starts over once the watch has stayed up for the reset period (120 s)."""
    clock = FakeClock()
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    client = ScriptedClient(
        lists=[[_cm("a", "2")]],
        watches=[
            ApiError(410, {"reason": "Expired"}),
            [_line("ERROR", gone)],
            ApiError(410, {"reason": "Expired"}),
            # A watch that works for a while (200 s on the fake clock), then expires.
            [lambda: clock.advance(200), _line("MODIFIED", _cm("a", "3")), _line("ERROR", gone)],
            ApiError(410, {"reason": "Expired"}),
        ],
    )
    sink = _CountingSink()
    reflector = Reflector(
        client,  # type: ignore[arg-type]
        CONFIGMAPS,
        sink,
        settings=WatchSettings(backoff_jitter=0.0),
        clock=clock,
        sleep=clock.sleep,
    )
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(client.done.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sink.lists == 6  # the first list and one per 410
    assert clock.slept_s == pytest.approx([0.8, 1.6, 3.2, 0.8, 1.6])


async def test_a_transform_runs_on_each_object_as_it_arrives_listed_or_watched() -> None:
    """Page by page, before the list is complete: a list of thousands of pods must not hold
    them all with their managedFields (often most of an object) at once."""
    transformed: list[str] = []

    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        transformed.append(obj["metadata"]["name"])
        return strip_managed_fields(obj)

    def with_fields(name: str, rv: str) -> dict[str, Any]:
        obj = _cm(name, rv)
        obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
        return obj

    client = ScriptedClient(
        lists=[[with_fields("a", "2"), with_fields("b", "3")]],
        watches=[[_line("ADDED", with_fields("c", "4"))]],
    )
    informer = Informer(
        client,  # type: ignore[arg-type]
        CONFIGMAPS,
        settings=WatchSettings(backoff_initial_s=0.01, backoff_jitter=0.0),
        transform=strip,
    )
    await _run_until_done(informer, client)
    assert transformed == ["a", "b", "c"]  # once each: listed, listed, watched
    for key in ("ns/a", "ns/b", "ns/c"):
        cached = informer.store.get(key)
        assert cached is not None
        assert "managedFields" not in obj_at(cached, "metadata")
