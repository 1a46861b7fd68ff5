"""The admission webhook's HTTP contract, whatever arrives: a well-formed AdmissionReview gets the
handler's answer, anything else a 400 that names no traceback, and a handler that fails admits
the object unchanged instead of answering 500 (through aiohttp's test client, plain HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climatik.reconcilers.placement_webhook import PlacementSnapshot, PlacementWebhook
from climatik.runtime.webhook import DEFAULT_PATH, WebhookServer, serve_webhook, webhook_app
from tests.certificates import self_signed

V1 = "admission.k8s.io/v1"


def _review(uid: Any = "u-1", **request: Any) -> dict[str, Any]:
    pod = {"metadata": {"labels": {"climatik-project.ai/managed": "true"}}, "spec": {}}
    body = {"uid": uid, "kind": {"kind": "Pod"}, "operation": "CREATE", "object": pod}
    return {"apiVersion": V1, "kind": "AdmissionReview", "request": {**body, **request}}


async def _client(
    handler: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(webhook_app(handler)))
    await client.start_server()
    return client


@pytest.fixture
async def placement_client() -> AsyncIterator[TestClient[Any, Any]]:
    client = await _client(PlacementWebhook(PlacementSnapshot()).handle)
    try:
        yield client
    finally:
        await client.close()


def _deep(depth: int) -> bytes:
    return b'{"apiVersion":"admission.k8s.io/v1","request":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000, id="deeply-nested-array"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deeply-nested-object"),
        pytest.param(_deep(20_000), id="deeply-nested-request"),
        pytest.param(json.dumps(_review(uid=7)).encode(), id="uid-not-a-string"),
        pytest.param(json.dumps(_review(uid="")).encode(), id="uid-empty"),
        pytest.param(json.dumps({**_review(), "apiVersion": "v1"}).encode(), id="wrong-apiversion"),
        pytest.param(json.dumps({"request": {"uid": "u-1"}}).encode(), id="no-kind"),
    ],
)
async def test_a_body_that_is_not_a_well_formed_review_gets_400_and_no_traceback(
    placement_client: TestClient[Any, Any], body: bytes
) -> None:
    resp = await placement_client.post(DEFAULT_PATH, data=body)
    text = await resp.text()
    assert resp.status == 400, text[:300]
    assert "not an AdmissionReview" in json.loads(text)["error"]
    assert "Traceback" not in text


async def test_a_failing_handler_admits_unchanged_instead_of_answering_500() -> None:
    def broken(review: Mapping[str, Any]) -> Mapping[str, Any]:
        raise RuntimeError("a bug in the handler")

    def unsendable(review: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"response": {"uid": "u-1", "allowed": True, "patch": object()}}

    for handler in (broken, unsendable):
        client = await _client(handler)
        try:
            resp = await client.post(DEFAULT_PATH, json=_review(uid="u-9"))
            assert resp.status == 200
            assert await resp.json() == {
                "apiVersion": V1,
                "kind": "AdmissionReview",
                "response": {"uid": "u-9", "allowed": True},
            }
        finally:
            await client.close()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda value: json.dumps(value).encode()),
    # Review-shaped, with arbitrary values where the fields go.
    st.fixed_dictionaries(
        {},
        optional={
            "apiVersion": st.sampled_from([V1, "admission.k8s.io/v1beta1"]) | _json,
            "kind": st.just("AdmissionReview") | _json,
            "request": st.fixed_dictionaries(
                {}, optional={"uid": st.text() | _json, "object": _json, "kind": _json}
            )
            | _json,
        },
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(1_000, 60_000).map(lambda depth: b"[" * depth),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies)
async def test_any_body_gets_the_handlers_answer_or_400_never_500(
    placement_client: TestClient[Any, Any], body: bytes
) -> None:
    resp = await placement_client.post(DEFAULT_PATH, data=body)
    text = await resp.text()
    assert resp.status in (200, 400), text[:300]
    assert "Traceback" not in text
    if resp.status == 400:
        return
    # Answered: the body was a v1 AdmissionReview with a uid, and the answer echoes it.
    sent = json.loads(body)
    assert (sent["apiVersion"], sent["kind"]) == (V1, "AdmissionReview")
    uid = sent["request"]["uid"]
    assert isinstance(uid, str)
    assert uid
    answer = json.loads(text)
    assert answer["response"]["uid"] == uid
    assert answer["response"]["allowed"] is True


async def test_a_bad_rotation_keeps_the_served_pair_and_says_so(tmp_path: Path) -> None:
    """A new certificate whose key does not match (a rotation caught half way), then garbage:
    the previous pair serves on, and `on_certificate` reports False until a good pair lands."""
    cert_file, key_file = self_signed(tmp_path, "tls")
    states: list[bool] = []
    serving: list[WebhookServer] = []
    task = asyncio.create_task(
        serve_webhook(
            PlacementWebhook(PlacementSnapshot()).handle,
            "127.0.0.1",
            0,
            cert_file,
            key_file,
            poll_s=0.02,
            on_certificate=states.append,
            on_serving=serving.append,
        )
    )

    async def wait_for_state(ok: bool) -> None:
        # A deadline, not a count of sleeps: on a loaded machine a poll can take far longer.
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if states and states[-1] is ok:
                return
        raise AssertionError(f"no certificate state {ok}: {states}")

    async def wait_for_serving() -> None:
        # The state is reported when the pair loads, before the listener is up.
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if serving:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the webhook never started serving")

    async def healthz(cafile: Path) -> int:
        trust = ssl.create_default_context(cafile=str(cafile))
        url = f"https://127.0.0.1:{serving[0].port}/healthz"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, ssl=trust) as resp,
        ):
            return resp.status

    try:
        await wait_for_state(True)
        await wait_for_serving()
        first = tmp_path / "first.crt"
        first.write_bytes(cert_file.read_bytes())
        assert await healthz(first) == 200

        other_cert, _ = self_signed(tmp_path, "other")
        os.replace(other_cert, cert_file)  # the new certificate, still the old key
        os.utime(cert_file, (2e9, 2e9))
        await wait_for_state(False)
        assert await healthz(first) == 200, "the previous pair still serves"

        cert_file.write_text("garbage")
        os.utime(cert_file, (2e9 + 5, 2e9 + 5))
        await asyncio.sleep(0.1)
        assert states[-1] is False
        assert await healthz(first) == 200

        new_cert, new_key = self_signed(tmp_path, "new")
        os.replace(new_key, key_file)
        os.replace(new_cert, cert_file)
        os.utime(cert_file, (2e9 + 10, 2e9 + 10))
        await wait_for_state(True)
        assert await healthz(cert_file) == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
