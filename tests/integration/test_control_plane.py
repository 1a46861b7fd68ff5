"""The dev cluster is a real control plane, not a stand-in.

Each test exercises a behaviour only the real components have: kube-scheduler honouring a
required node affinity on kwok nodes, KEDA's own CRD schema refusing a bad ScaledObject,
optimistic concurrency on Leases (the basis of leader election), and `down` leaving nothing
behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from climatik.devcluster.cluster import ClusterInfo, DevClusterError, down, read_state, up
from climatik.devcluster.topology import Rack, Topology
from tests.integration.conftest import SESSION_TOPOLOGY, Kubectl, wait_until
from tests.integration.helpers.host_processes import listening_ports, processes_mentioning

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RACK_KEY = SESSION_TOPOLOGY.rack_label_key


def _deployment(name: str, rack: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": RACK_KEY, "operator": "In", "values": [rack]}
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "containers": [
                        {
                            "name": "llm",
                            "image": "vllm/vllm-openai:latest",
                            "resources": {
                                "requests": {"nvidia.com/gpu": "1", "cpu": "1"},
                                "limits": {"nvidia.com/gpu": "1"},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_deployment_pods_scheduled_onto_the_required_rack_and_running(
    dev_cluster: ClusterInfo, kubectl: Kubectl
) -> None:
    rack = "rack-b"
    kubectl.apply(_deployment("llm", rack, replicas=3))

    def three_running() -> bool:
        pods = kubectl.get_json("pods", "-l", "app=llm")["items"]
        return len(pods) == 3 and all(p["status"].get("phase") == "Running" for p in pods)

    wait_until("3 pods Running", three_running, timeout_s=120)
    pods = kubectl.get_json("pods", "-l", "app=llm")["items"]
    rack_nodes = set(dev_cluster.nodes_by_rack[rack])
    for pod in pods:
        assert pod["spec"]["nodeName"] in rack_nodes, pod["spec"]["nodeName"]
        assert pod["spec"]["schedulerName"] == "default-scheduler"
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions["PodScheduled"] == "True"
    # kube-scheduler, not a direct nodeName, did the placing: it records a Scheduled event.
    events = kubectl.get_json("events", "--field-selector", "reason=Scheduled")["items"]
    scheduled = {e["involvedObject"]["name"] for e in events}
    assert {p["metadata"]["name"] for p in pods} <= scheduled
    reporters = {e.get("reportingComponent") or e["source"].get("component") for e in events}
    assert reporters == {"default-scheduler"}
    deployment = kubectl.get_json("deployment", "llm")
    wait_until(
        "the Deployment to report 3 ready replicas",
        lambda: kubectl.get_json("deployment", "llm")["status"].get("readyReplicas") == 3,
    )
    assert deployment["spec"]["replicas"] == 3


def _scaled_object(name: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": "llm"},
        "minReplicaCount": 1,
        "maxReplicaCount": 8,
        "triggers": [
            {
                "type": "prometheus",
                "metadata": {
                    "serverAddress": "http://prometheus:9090",
                    "query": "sum(vllm:num_requests_running)",
                    "threshold": "10",
                },
            }
        ],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


def test_kwok_nodes_renew_their_leases_like_kubelets(
    dev_cluster: ClusterInfo, kubectl: Kubectl
) -> None:
    """Without renewed Leases the node-lifecycle controller flips every node NotReady each
    grace period, which marks pods unready and reorders scale-in: tests then fail by chance."""
    nodes = {n for rack_nodes in dev_cluster.nodes_by_rack.values() for n in rack_nodes}

    def renew_times() -> dict[str, str]:
        leases = kubectl.get_json("leases", "-n", "kube-node-lease")["items"]
        return {
            lease["metadata"]["name"]: lease["spec"].get("renewTime", "")
            for lease in leases
            if lease["metadata"]["name"] in nodes
        }

    first = renew_times()
    assert set(first) == nodes, f"nodes without a Lease: {sorted(nodes - set(first))}"
    wait_until(
        "every node Lease to be renewed",
        lambda: all(t != first[n] for n, t in renew_times().items()),
        timeout_s=30,
    )
    for node in kubectl.get_json("nodes")["items"]:
        if node["metadata"]["name"] in nodes:
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True", node["metadata"]["name"]


def test_keda_scaledobject_schema_accepts_valid_and_refuses_invalid(
    dev_cluster: ClusterInfo, kubectl: Kubectl
) -> None:
    kubectl.apply(_scaled_object("good"))
    stored = kubectl.get_json("scaledobject", "good")
    assert stored["spec"]["maxReplicaCount"] == 8

    wrong_type = kubectl.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(_scaled_object("bad-type", maxReplicaCount="eight")),
        check=False,
    )
    assert wrong_type.returncode != 0
    assert "maxReplicaCount" in wrong_type.stderr
    assert "integer" in wrong_type.stderr

    missing_target = kubectl.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(_scaled_object("no-target", scaleTargetRef=None)),
        check=False,
    )
    assert missing_target.returncode != 0
    assert "scaleTargetRef" in missing_target.stderr
    names = {o["metadata"]["name"] for o in kubectl.get_json("scaledobjects")["items"]}
    assert names == {"good"}


def test_lease_update_with_stale_resource_version_conflicts(
    dev_cluster: ClusterInfo, namespace: str
) -> None:
    api = dev_cluster.admin_client()
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "climatik-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    created = api.post(path, lease)
    assert created.status == 201, created
    stale_rv = created.body["metadata"]["resourceVersion"]

    renewed = dict(
        created.body, spec={**created.body["spec"], "holderIdentity": "a", "leaseTransitions": 0}
    )
    first = api.request("PUT", f"{path}/climatik-leader", renewed)
    assert first.status == 200, first
    assert first.body["metadata"]["resourceVersion"] != stale_rv

    takeover = dict(created.body, spec={**created.body["spec"], "holderIdentity": "b"})
    assert takeover["metadata"]["resourceVersion"] == stale_rv
    conflict = api.request("PUT", f"{path}/climatik-leader", takeover)
    assert conflict.status == 409, conflict
    assert conflict.body["reason"] == "Conflict"
    assert api.get(f"{path}/climatik-leader").body["spec"]["holderIdentity"] == "a"


@pytest.mark.timeout(600)
def test_up_then_down_three_times_leaves_no_process_or_port(cluster_dir: Path) -> None:
    small = Topology(racks=(Rack(name="r1", nodes=1, gpus_per_node=8),))
    for _ in range(3):
        info = up(cluster_dir, small)
        state = read_state(cluster_dir)
        assert state is not None
        assert len(state["processes"]) == 6
        ports = set(info.ports.values())
        assert ports & listening_ports(), "the cluster should be listening while up"
        # `up` on a running cluster reuses it instead of starting a second one, and refuses
        # to pretend a cluster with other racks is the one asked for.
        assert up(cluster_dir, small).api_url == info.api_url
        with pytest.raises(DevClusterError, match="another topology"):
            up(cluster_dir, Topology())

        stopped = down(cluster_dir)
        assert sorted(stopped) == sorted(
            [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
                "service-proxy",
            ]
        )
        # Every component's command line names a file in the cluster directory.
        assert not processes_mentioning(str(cluster_dir)), "a component outlived down"
        assert not ports & listening_ports(), "a port is still listening after down"
        assert read_state(cluster_dir) is None
    assert down(cluster_dir) == []
