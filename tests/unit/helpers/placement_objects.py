"""The cluster objects of the placement unit tests: a config capping Deployment `chat` across
two racks, its nodes, pods and Deployment."""

from __future__ import annotations

from typing import Any

from climatik.reconcilers.placement_deletion_costs import DELETION_COST_ANNOTATION

KEY = "climatik-project.ai/rack"
NS = "llm"


def config(mode: str = "Webhook", cooling: str = "DryRun", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": "cap", "namespace": NS, "generation": 3, "resourceVersion": "7"},
        "spec": {
            "powerCapLimit": 100_000,
            "deploymentName": "chat",
            "rackConstraints": [
                {"rackId": "rack-a", "maxPower": 40_000, "maxTemperature": 30},
                {"rackId": "rack-b", "maxPower": 40_000, "maxTemperature": 30},
            ],
            "placement": {"mode": mode, "rackLabelKey": KEY},
            "cooling": (
                {"mode": cooling, "webhookURL": "http://bms.example/setpoints"}
                if cooling == "Webhook"
                else {"mode": cooling}
            ),
            **spec,
        },
    }


def node(name: str, rack: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {KEY: rack}}}


def pod(
    name: str, node_name: str, cost: str | None = None, phase: str = "Running"
) -> dict[str, Any]:
    annotations = {DELETION_COST_ANNOTATION: cost} if cost is not None else {}
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app": "chat"},
            "annotations": annotations,
        },
        "spec": {"nodeName": node_name},
        "status": {"phase": phase},
    }


DEPLOYMENT = {
    "metadata": {"name": "chat", "namespace": NS},
    "spec": {
        "selector": {"matchLabels": {"app": "chat"}},
        "template": {"metadata": {"labels": {"app": "chat"}}, "spec": {"containers": []}},
    },
}
