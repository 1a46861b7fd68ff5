"""The PowerCappingConfig CRD against a real kube-apiserver: what it accepts, refuses and shows.

Runs on the dev cluster (`climatik dev-cluster`), which installs the committed CRD from `crd/`.
Every request goes through the cluster's own kubectl, as a user's would: the design document's
examples apply unchanged, each invalid object is refused with an error that names the offending
field, the controller's status patch survives a round trip through the status subresource, and
`kubectl get pcc` shows the printer columns.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from climatik.api.convert import config_from_object, parse_object
from climatik.api.spec import PowerCappingConfigSpec
from climatik.api.status import (
    MERGE_PATCH_CONTENT_TYPE,
    set_condition,
    status_from_wire,
    status_patch,
)
from climatik.api.status_models import (
    ConditionStatus,
    ConditionType,
    Decision,
    EffectiveCapSource,
    PowerCappingConfigStatus,
    RackStatus,
    TargetKindName,
    TargetStatus,
)
from climatik.devcluster.cluster import ClusterInfo
from tests.api_cases import (
    DESIGN_EXAMPLE_KSERVE,
    DESIGN_EXAMPLES,
    FULL_EXAMPLE,
    INVALID_CASE_IDS,
    INVALID_CASES,
    InvalidCase,
    docs_examples,
    load,
)
from tests.integration.conftest import Kubectl, wait_until

pytestmark = pytest.mark.integration

NAME = "llm-inference-power-cap"
NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def _pcc_discoverable(dev_cluster: ClusterInfo) -> None:
    """Wait until kubectl resolves `pcc`: discovery can lag an Established CRD for a moment."""
    admin = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, "default")
    wait_until(
        "the PowerCappingConfig kind to appear in discovery",
        lambda: admin.run("get", "pcc", check=False).returncode == 0,
        timeout_s=60,
    )


def _is_subset(small: Any, big: Any) -> bool:
    """True when every key and list item of `small` is in `big` (server defaults may add more)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            key in big and _is_subset(value, big[key]) for key, value in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(small) == len(big)
            and all(_is_subset(a, b) for a, b in zip(small, big, strict=True))
        )
    return bool(small == big)


@pytest.mark.parametrize("example", sorted(DESIGN_EXAMPLES))
def test_design_example_applies_unchanged(kubectl: Kubectl, example: str) -> None:
    text = DESIGN_EXAMPLES[example]
    kubectl.run("apply", "-f", "-", stdin=text)
    stored = kubectl.get_json("pcc", NAME)
    assert _is_subset(load(text)["spec"], stored["spec"])
    # The controller reads back what the API server stored.
    config = config_from_object(stored)
    assert config.namespace == kubectl.namespace
    assert config.power_cap_w == float(load(text)["spec"]["powerCapLimit"])


def test_every_extension_applies(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", stdin=FULL_EXAMPLE)
    stored = kubectl.get_json("pcc", "full")
    assert _is_subset(load(FULL_EXAMPLE)["spec"], stored["spec"])
    parse_object(stored)


def test_docs_examples_apply(kubectl: Kubectl) -> None:
    examples = docs_examples()
    assert len(examples) >= 8
    for index, example in enumerate(examples):
        example["metadata"]["name"] = f"docs-{index}"
        kubectl.apply(example)
    names = kubectl.run("get", "pcc", "-o", "name").stdout.split()
    assert len(names) == len(examples)


def test_server_defaults_equal_model_defaults(kubectl: Kubectl) -> None:
    source: dict[str, Any] = {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": "defaults"},
        "spec": {
            "powerCapLimit": 1000,
            "scaleObjectRef": [{"metadata": {"name": "so"}}],
            "policy": {},
            "powerMeasurement": {},
            "placement": {"migration": {}},
            "cooling": {},
            "gpuTuning": {},
            "replicaSizing": {},
            "failSafe": {},
            "carbon": {
                "provider": "UKNationalGrid",
                "target": {"type": "EmissionRate", "emissionRateGramsPerHour": 9},
            },
        },
    }
    kubectl.apply(source)
    stored = kubectl.get_json("pcc", "defaults")["spec"]
    expected = PowerCappingConfigSpec.model_validate(source["spec"]).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert stored == expected


@pytest.mark.parametrize("case", INVALID_CASES, ids=INVALID_CASE_IDS)
def test_invalid_object_is_refused_naming_the_field(kubectl: Kubectl, case: InvalidCase) -> None:
    result = kubectl.run("create", "-f", "-", stdin=json.dumps(case.build()), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"accepted: {output}"
    assert case.field in output, output
    assert kubectl.run("get", "pcc", "-o", "name").stdout.strip() == ""


def test_at_least_25_invalid_cases() -> None:
    assert len(INVALID_CASES) >= 25


def _desired_status(
    generation: int, previous: PowerCappingConfigStatus | None
) -> PowerCappingConfigStatus:
    conditions = tuple(previous.conditions or ()) if previous else ()
    for type_, status, reason in (
        (ConditionType.READY, ConditionStatus.TRUE, "Reconciled"),
        (ConditionType.METRICS_AVAILABLE, ConditionStatus.TRUE, "QueryAnswered"),
        (ConditionType.CAPPING, ConditionStatus.TRUE, "AtCappingThreshold"),
    ):
        conditions = set_condition(
            conditions,
            type_=type_,
            status=status,
            reason=reason,
            message="812.5 W is 81 % of the 1000 W cap",
            observed_generation=generation,
            now=NOW,
        )
    return PowerCappingConfigStatus(
        observed_generation=generation,
        conditions=list(conditions),
        measured_power_watts=812.5,
        effective_cap_watts=1000.0,
        effective_cap_source=EffectiveCapSource.STATIC,
        targets=[
            TargetStatus(
                name="llm-inference-scaledobject",
                kind=TargetKindName.SCALED_OBJECT,
                current_replicas=4,
                user_max_replicas=10,
                applied_max_replicas=5,
                watts_per_replica=203.1,
                tokens_per_watt=1.25,
            )
        ],
        racks=[
            RackStatus(
                rack_id="rack-1", power_watts=812.5, inlet_celsius=24.5, headroom_watts=1187.5
            ),
            RackStatus(
                rack_id="rack-2", power_watts=0.0, inlet_celsius=22.0, headroom_watts=1500.0
            ),
        ],
        last_decision=Decision(time=NOW, action="Cap", reason="81 % of cap: ceiling = current + 1"),
    )


def _patch_status(kubectl: Kubectl, body: dict[str, Any]) -> str:
    """Merge-patch the status subresource; returns kubectl's verbose log (request headers)."""
    result = kubectl.run(
        "patch", "pcc", NAME, "--subresource=status", "--type=merge", "-p", json.dumps(body), "-v=8"
    )
    return result.stderr


def test_status_patch_round_trips_through_the_subresource(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", stdin=DESIGN_EXAMPLE_KSERVE)
    obj = kubectl.get_json("pcc", NAME)
    generation = obj["metadata"]["generation"]
    assert status_from_wire(obj) is None

    desired = _desired_status(generation, None)
    body = status_patch(None, desired, resource_version=obj["metadata"]["resourceVersion"])
    assert body is not None
    log = _patch_status(kubectl, body)
    assert MERGE_PATCH_CONTENT_TYPE in log
    stored = kubectl.get_json("pcc", NAME)
    assert status_from_wire(stored) == desired
    assert stored["spec"] == obj["spec"]
    assert stored["metadata"]["generation"] == generation, "a status write is not a spec change"

    # A second decision: the cap releases and the power reading goes missing (sent as null).
    released = set_condition(
        tuple(desired.conditions or ()),
        type_=ConditionType.CAPPING,
        status=ConditionStatus.FALSE,
        reason="BelowThreshold",
        message="power fell below 75 % of the cap",
        observed_generation=generation,
        now=datetime(2026, 11, 29, 12, 5, 0, tzinfo=UTC),
    )
    second = desired.model_copy(update={"conditions": list(released), "measured_power_watts": None})
    body = status_patch(desired, second)
    assert body is not None
    assert body["status"]["measuredPowerWatts"] is None
    _patch_status(kubectl, body)
    stored = kubectl.get_json("pcc", NAME)
    assert status_from_wire(stored) == second
    assert "measuredPowerWatts" not in stored["status"]


def test_status_is_a_subresource(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", stdin=DESIGN_EXAMPLE_KSERVE)
    # Writing status through the main resource is ignored...
    kubectl.run("patch", "pcc", NAME, "--type=merge", "-p", '{"status":{"measuredPowerWatts":5}}')
    assert "status" not in kubectl.get_json("pcc", NAME)
    # ...and writing spec through the status subresource is ignored too.
    kubectl.run(
        "patch",
        "pcc",
        NAME,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"spec":{"powerCapLimit":5},"status":{"measuredPowerWatts":5}}',
    )
    stored = kubectl.get_json("pcc", NAME)
    assert stored["spec"]["powerCapLimit"] == 1000
    assert stored["status"]["measuredPowerWatts"] == 5


def test_status_validation_refuses_a_bad_condition(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", stdin=DESIGN_EXAMPLE_KSERVE)
    bad = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "Maybe",
                    "reason": "x",
                    "lastTransitionTime": "2026-11-29T12:00:00Z",
                }
            ]
        }
    }
    result = kubectl.run(
        "patch",
        "pcc",
        NAME,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert result.returncode != 0
    assert "status.conditions[0].status" in result.stderr


def test_kubectl_get_shows_cap_power_state_age(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("apply", "-f", "-", stdin=DESIGN_EXAMPLE_KSERVE)
    obj = kubectl.get_json("pcc", NAME)
    body = status_patch(None, _desired_status(obj["metadata"]["generation"], None))
    assert body is not None
    _patch_status(kubectl, body)
    # By name: another test file's configs may share the session cluster's namespace.
    header, row = kubectl.run("get", "pcc", NAME).stdout.strip().splitlines()
    assert header.split() == ["NAME", "CAP", "POWER", "STATE", "AGE"]
    cells = row.split()
    assert cells[:4] == [NAME, "1000", "812.5", "AtCappingThreshold"]
    assert re.fullmatch(r"\d+[smhd]", cells[4])
    wide_header = kubectl.run("get", "pcc", NAME, "-o", "wide").stdout.splitlines()[0].split()
    assert wide_header == ["NAME", "CAP", "POWER", "STATE", "READY", "LIMIT", "SOURCE", "AGE"]
    # The short name and the category both find it. A fresh discovery cache: kubectl caches the
    # category's members for minutes, and other test files add and delete CRDs in it.
    found = kubectl.run("get", "climatik", "-o", "name", "--cache-dir", str(tmp_path)).stdout
    assert f"powercappingconfig.powercapping.climatik-project.ai/{NAME}" in found.split()
