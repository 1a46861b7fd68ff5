"""The kube client's own helpers against the real API server."""

from __future__ import annotations

import pytest

from climatik.kube.client import KubeClient
from climatik.kube.resources import CONFIGMAPS
from tests.json_paths import text_at

pytestmark = [pytest.mark.integration]


async def test_create_or_merge_creates_then_merges_into_the_object_that_exists(
    client: KubeClient, namespace: str
) -> None:
    # What a tuning run does with its result ConfigMap: the first run creates it, a later one
    # replaces the data and keeps what the patch does not name.
    def body(value: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "result", "namespace": namespace, "labels": {"run": value}},
            "data": {"result.json": value},
        }

    first = body("first")
    await client.create_or_merge(CONFIGMAPS, first, {"data": first["data"]}, namespace)
    second = body("second")
    await client.create_or_merge(CONFIGMAPS, second, {"data": second["data"]}, namespace)
    stored = await client.get(CONFIGMAPS, "result", namespace)
    assert text_at(stored, "data", "result.json") == "second"
    assert text_at(stored, "metadata", "labels", "run") == "first"
