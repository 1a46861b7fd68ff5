"""The placement admission webhook: what it patches, what it leaves alone, and its TLS server."""

from __future__ import annotations

import base64
import json
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from climatik.reconcilers.placement_metrics import PlacementMetrics
from climatik.reconcilers.placement_webhook import (
    PLACEMENT_ANNOTATION,
    PlacementSnapshot,
    PlacementWebhook,
    WorkloadPlacement,
    owning_deployment,
    placement_patch,
)
from climatik.runtime.webhook import start_webhook_server
from tests.certificates import self_signed
from tests.json_paths import dig

KEY = "climatik-project.ai/rack"


def placement(**kw: Any) -> WorkloadPlacement:
    base: dict[str, Any] = {
        "config_key": "llm/cap",
        "namespace": "llm",
        "deployment": "chat",
        "rack_label_key": KEY,
        "preferred": (("rack-b", 100), ("rack-c", 40)),
        "excluded": ("rack-a",),
        "computed_at_s": 100.0,
    }
    base.update(kw)
    return WorkloadPlacement(**base)


def pod(*, managed: bool = True, owner: str | None = "chat-5d8f7", **spec: Any) -> dict[str, Any]:
    labels = {"app": "chat", "pod-template-hash": "5d8f7"}
    if managed:
        labels["climatik-project.ai/managed"] = "true"
    metadata: dict[str, Any] = {"generateName": "chat-5d8f7-", "labels": labels}
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "controller": True}
        ]
    return {"metadata": metadata, "spec": {"containers": [{"name": "llm"}], **spec}}


def review(obj: dict[str, Any], operation: str = "CREATE", kind: str = "Pod") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "operation": operation,
            "namespace": "llm",
            "object": obj,
        },
    }


def apply_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Enough of RFC 6902 `add` to check what the API server will store."""
    out: dict[str, Any] = json.loads(json.dumps(obj))
    for op in ops:
        assert op["op"] == "add"
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        target = out
        for part in parents:
            target = target[part]
        target[last] = op["value"]
    return out


def decoded(answer: dict[str, Any]) -> list[dict[str, Any]]:
    response = answer["response"]
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


def webhook(now: float = 110.0, *items: WorkloadPlacement) -> PlacementWebhook:
    snapshot = PlacementSnapshot()
    snapshot.update("llm/cap", items or (placement(),))
    return PlacementWebhook(snapshot, max_age_s=60.0, clock=lambda: now)


def test_owning_deployment_strips_the_template_hash() -> None:
    assert owning_deployment(pod()) == "chat"
    assert owning_deployment(pod(owner="other-rs")) is None
    assert owning_deployment(pod(owner=None)) is None


def test_managed_pod_gets_preferred_racks_and_excludes_over_limit() -> None:
    answer = webhook().handle(review(pod()))
    assert dig(answer, "response", "allowed") is True
    assert dig(answer, "response", "uid") == "u-1"
    patched = apply_patch(pod(), decoded(answer))
    node_affinity = patched["spec"]["affinity"]["nodeAffinity"]
    preferred = node_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [(t["weight"], t["preference"]["matchExpressions"][0]["values"]) for t in preferred] == [
        (100, ["rack-b"]),
        (40, ["rack-c"]),
    ]
    (term,) = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": KEY, "operator": "NotIn", "values": ["rack-a"]}]
    assert "rack-b=100" in patched["metadata"]["annotations"][PLACEMENT_ANNOTATION]


def test_racks_without_a_seat_are_named_in_the_placement_note() -> None:
    patched = apply_patch(pod(), placement_patch(pod(), placement(seatless=("rack-d",))))
    assert patched["metadata"]["annotations"][PLACEMENT_ANNOTATION] == (
        "rack-b=100, rack-c=40; avoid rack-a; no seat rack-d"
    )


def test_existing_affinity_is_kept_and_not_in_is_anded_into_each_term() -> None:
    existing: dict[str, Any] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]},
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 5,
                    "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]},
                }
            ],
        },
        "podAntiAffinity": {"kept": True},
    }
    obj = pod(affinity=existing)
    obj["metadata"]["annotations"] = {"user/note": "hi"}
    patched = apply_patch(obj, placement_patch(obj, placement()))
    affinity = patched["spec"]["affinity"]
    assert affinity["podAntiAffinity"] == {"kept": True}
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert len(terms) == 2  # ANDed into each term, never a new ORed term
    assert all(t["matchExpressions"][-1]["operator"] == "NotIn" for t in terms)
    assert terms[1]["matchFields"][0]["key"] == "metadata.name"
    preferred = affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [t["weight"] for t in preferred] == [5, 100, 40]
    assert patched["metadata"]["annotations"]["user/note"] == "hi"
    assert PLACEMENT_ANNOTATION in patched["metadata"]["annotations"]
    # The input was not mutated.
    assert len(existing["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]) == 1


@pytest.mark.parametrize(
    ("obj", "operation", "kind"),
    [
        (pod(managed=False), "CREATE", "Pod"),
        (pod(owner=None), "CREATE", "Pod"),
        (pod(owner="someone-else-5d8f7"), "CREATE", "Pod"),
        (pod(), "UPDATE", "Pod"),
        (pod(), "CREATE", "Deployment"),
    ],
    ids=["unmanaged", "no-owner", "untargeted", "update", "not-a-pod"],
)
def test_leaves_alone_what_it_does_not_place(
    obj: dict[str, Any], operation: str, kind: str
) -> None:
    answer = webhook().handle(review(obj, operation, kind))
    assert answer["response"] == {"uid": "u-1", "allowed": True}


def test_stale_snapshot_and_reinvocation_give_no_patch() -> None:
    assert decoded(webhook(now=500.0).handle(review(pod()))) == []
    placed = pod()
    placed["metadata"]["annotations"] = {PLACEMENT_ANNOTATION: "rack-b=100"}
    assert decoded(webhook().handle(review(placed))) == []


def test_internal_errors_allow_without_patch_and_are_counted() -> None:
    metrics = PlacementMetrics()
    hook = webhook()
    hook.metrics = metrics
    broken = review(pod())
    broken["request"]["object"]["spec"] = "not a mapping"
    answer = hook.handle(broken)
    assert answer["response"] == {"uid": "u-1", "allowed": True}
    hook.handle(review(pod()))
    assert (
        metrics.registry.get_sample_value(
            "climatik_placement_webhook_requests_total", {"result": "error"}
        )
        == 1.0
    )
    assert (
        metrics.registry.get_sample_value(
            "climatik_placement_webhook_requests_total", {"result": "patched"}
        )
        == 1.0
    )


def test_nothing_to_say_gives_no_patch() -> None:
    empty = placement(preferred=(), excluded=())
    assert placement_patch(pod(), empty) == []


def test_snapshot_update_replaces_a_config_at_once() -> None:
    snapshot = PlacementSnapshot()
    snapshot.update("llm/cap", [placement(), placement(deployment="embed")])
    assert len(snapshot) == 2
    snapshot.update("llm/cap", [placement(deployment="embed")])
    assert snapshot.lookup("llm", "chat") is None
    assert snapshot.lookup("llm", "embed") is not None
    snapshot.remove("llm/cap")
    assert len(snapshot) == 0


# -- the TLS server ---------------------------------------------------------------------------


async def test_tls_server_answers_reviews_and_refuses_garbage(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server = await start_webhook_server(webhook().handle, "127.0.0.1", 0, cert_file, key_file)
    try:
        trust = ssl.create_default_context(cafile=str(cert_file))
        async with aiohttp.ClientSession() as session:
            async with session.post(server.url, json=review(pod()), ssl=trust) as resp:
                assert resp.status == 200
                answer = await resp.json()
            assert decoded(answer)
            async with session.post(server.url, data=b"{not json", ssl=trust) as resp:
                assert resp.status == 400
            async with session.get(f"https://127.0.0.1:{server.port}/healthz", ssl=trust) as resp:
                assert resp.status == 200
            # Rotate the certificate in place: new connections see the new one.
            new_cert, new_key = self_signed(tmp_path, "new")
            os.replace(new_cert, cert_file)
            os.replace(new_key, key_file)
            os.utime(cert_file, (1e9 + 5, 1e9 + 5))
            async with session.post(server.url, json=review(pod()), ssl=trust) as resp:
                assert resp.status == 200  # this connection was already open: old pair
        new_trust = ssl.create_default_context(cafile=str(cert_file))
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url, json=review(pod()), ssl=new_trust) as resp,
        ):
            assert resp.status == 200
    finally:
        await server.stop()
