"""Reading which pods the world serves from API objects: service labels, GPUs asked for,
readiness and the model's start-up time, rack nodes; and one whole step from cached objects to
the exposition."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.domain.config import GpuTuningMode
from climatik.kube.store import freeze
from climatik.world.driver import WorldLoop, WorldSettings
from climatik.world.readings import Readings
from climatik.world.seats import (
    StartupClock,
    gpus_of,
    is_ready,
    model_of,
    node_seat,
    seat_pods,
    service_of,
)
from climatik.world.site import Frame, NodeSeat
from climatik.world.tally import SiteFigures
from tests.unit.fakeclock import FakeClock
from tests.unit.test_world_site import flat_scenario
from tests.unit.test_world_tuning import job as tuning_job
from tests.unit.world_helpers import samples, scrape, value_of

RACK = "climatik-project.ai/rack"


def node(name: str, rack: str | None, gpus: str | None = "8") -> dict[str, Any]:
    labels = {RACK: rack} if rack else {}
    capacity = {"nvidia.com/gpu": gpus} if gpus else {}
    return {"metadata": {"name": name, "labels": labels}, "status": {"capacity": capacity}}


def pod(
    name: str,
    app: str | None = "chat",
    node_name: str | None = "n1",
    *,
    ready: bool = True,
    gpus: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "llm", "uid": f"uid-{name}"}
    meta["labels"] = {"app": app} if app else {}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    resources = {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}
    spec: dict[str, Any] = {"containers": [{"name": "vllm", "resources": resources}]}
    if node_name:
        spec["nodeName"] = node_name
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "spec": spec, "status": status}


def test_node_seat_reads_rack_and_gpus() -> None:
    assert node_seat(node("n1", "rack-a", "4"), RACK, 8) == NodeSeat("n1", "rack-a", 4)
    assert node_seat(node("n1", "rack-a", None), RACK, 8) == NodeSeat("n1", "rack-a", 8)
    assert node_seat(node("n1", None), RACK, 8) is None


def test_service_label_kserve_first_then_app_labels() -> None:
    kserve = pod("p")
    kserve["metadata"]["labels"]["serving.kserve.io/inferenceservice"] = "isvc"
    assert service_of(kserve) == "isvc"
    assert service_of(pod("p", app="chat")) == "chat"
    assert service_of(pod("p", app=None)) is None


def test_a_pod_that_runs_to_completion_serves_no_service() -> None:
    # A GPU-tuning Job's pod carries app.kubernetes.io/name and sits on a GPU node.
    finite = pod("climatik-gpu-tune-abc", app="climatik-gpu-tune")
    for policy in ("Never", "OnFailure"):
        finite["spec"]["restartPolicy"] = policy
        assert service_of(finite) is None
    finite["spec"]["restartPolicy"] = "Always"
    assert service_of(finite) == "climatik-gpu-tune"


def test_gpus_asked_for_else_the_scenarios_per_replica() -> None:
    assert gpus_of(pod("p", gpus="2"), 8) == 2
    assert gpus_of(pod("p"), 8) == 8
    asked_by_request = pod("p")
    asked_by_request["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    assert gpus_of(asked_by_request, 8) == 1


def test_the_model_is_vllms_model_argument() -> None:
    served = pod("p")
    served["spec"]["containers"][0]["args"] = [
        "--model",
        "Qwen/Qwen2.5-7B-Instruct",
        "--port",
        "8000",
    ]
    assert model_of(served) == "Qwen/Qwen2.5-7B-Instruct"
    served["spec"]["containers"][0]["args"] = ["serve", "--model=meta/x"]
    assert model_of(served) == "meta/x"
    served["spec"]["containers"][0]["args"] = ["--model"]
    assert model_of(served) is None
    assert model_of(pod("p")) is None


def test_ready_means_ready_and_not_being_deleted() -> None:
    assert is_ready(pod("p"))
    assert not is_ready(pod("p", ready=False))
    assert not is_ready(pod("p", deleting=True))
    assert not is_ready({"metadata": {}})


def test_a_ready_pod_serves_after_its_start_up_time_and_starts_over_when_unready() -> None:
    clock = StartupClock()
    assert not clock.serving("llm/p", ready=True, now_s=0.0, startup_s=60.0)
    assert not clock.serving("llm/p", ready=True, now_s=50.0, startup_s=60.0)
    assert clock.serving("llm/p", ready=True, now_s=60.0, startup_s=60.0)
    assert not clock.serving("llm/p", ready=False, now_s=70.0, startup_s=60.0)
    assert not clock.serving("llm/p", ready=True, now_s=80.0, startup_s=60.0)


def test_seat_pods_keeps_inference_pods_on_rack_nodes() -> None:
    nodes = {"n1": NodeSeat("n1", "rack-a", 8)}
    objs = [
        pod("a"),
        pod("b", app="web"),  # not an inference service the world drives
        pod("c", node_name=None),  # not scheduled yet
        pod("d", node_name="n9"),  # not on a rack node
        pod("e", ready=False),
    ]
    seats = seat_pods(
        objs,
        nodes,
        {"chat": "chat"},
        {"chat": 0.0},
        clock=StartupClock(),
        now_s=0.0,
        default_gpus=8,
    )
    assert [(s.key, s.serving) for s in seats] == [("llm/a", True), ("llm/e", False)]


def test_a_step_from_cached_objects_publishes_every_family_with_the_pods_identity() -> None:
    clock = FakeClock()
    readings = Readings(clock=clock, wall_clock=lambda: 0.0)
    loop = WorldLoop(flat_scenario(chat_rps=2.0), readings, WorldSettings(speed=10))
    nodes = [node("rack-a-n0", "rack-a"), node("rack-a-n1", "rack-a"), node("other", None)]
    pods = [pod("chat-0", node_name="rack-a-n0"), pod("chat-1", node_name="rack-a-n1")]
    for k in range(8):  # past the model's 60 s start-up at 10 s steps, one wall second each
        frame = loop.step(pods, nodes, k)
        clock.advance(1.0)
    assert {p.key for p in frame.pods} == {"llm/chat-0", "llm/chat-1"}
    assert frame.services[0].serving == 2
    text = scrape(readings)
    # 2 requests/s of 256 tokens shared by two pods, served for the last two wall seconds.
    assert [p.tokens_per_s for p in frame.pods] == pytest.approx([256.0, 256.0])
    assert value_of(text, "vllm:generation_tokens_total", pod="chat-0") == pytest.approx(512.0)
    running = [value_of(text, "vllm:num_requests_running", pod=f"chat-{i}") for i in range(2)]
    assert running == pytest.approx([p.running_requests for p in frame.pods])
    kepler = samples(text, "kepler_pod_cpu_watts")
    assert {labels["pod_id"] for labels, _, _ in kepler} == {"uid-chat-0", "uid-chat-1"}
    dcgm = [labels for labels, _, _ in samples(text, "DCGM_FI_DEV_POWER_USAGE")]
    assert len(dcgm) == 16  # 8 GPUs per pod, asked for none: the scenario's per replica
    assert {labels["Hostname"] for labels in dcgm} == {"rack-a-n0", "rack-a-n1"}
    models = {labels["model_name"] for labels, _, _ in samples(text, "vllm:num_requests_running")}
    assert models == {"llama-70b-tp8"}  # no --model argument: the scenario service's model
    inlets = {labels["node"] for labels, _, _ in samples(text, "ipmi_temperature_celsius")}
    assert inlets == {"rack-a-n0", "rack-a-n1"}
    assert value_of(text, "vllm:num_requests_waiting", pod="chat-0") == pytest.approx(0.0)

    # The world's own figures, in simulated time: 8 steps of 10 s, the pods serving the last
    # two (2 requests/s of 256 tokens, well under capacity: all meet their SLOs); requests
    # before any pod served met none.
    assert value_of(text, "climatik_world_simulated_seconds_total") == pytest.approx(80.0)
    assert value_of(text, "climatik_world_tokens_total", service="chat") == pytest.approx(
        2 * 10 * 2.0 * 256
    )
    assert value_of(text, "climatik_world_requests_arrived_total", service="chat") == 160
    met = value_of(text, "climatik_world_requests_met_slo_total", service="chat")
    assert met == pytest.approx(2 * 10 * 2.0)
    assert value_of(text, "climatik_world_tokens_total", service="summarise") == 0
    assert value_of(text, "climatik_world_site_power_watts") == pytest.approx(frame.site_w)
    # Nothing above the scenario's site cap with two pods: no violation.
    assert value_of(text, "climatik_world_cap_violation_watt_seconds_total") == 0
    assert value_of(text, "climatik_world_max_overshoot_watts") == 0

    # A replica goes away: its series go; someone else's pod set by hand stays.
    readings.upsert({"namespace": "test", "name": "by-hand", "cpu_watts": 1})
    loop.step(pods[:1], nodes, 8)
    text = scrape(readings)
    assert not [s for s in samples(text, "kepler_pod_cpu_watts") if s[0]["pod_name"] == "chat-1"]
    assert [s for s in samples(text, "kepler_pod_cpu_watts") if s[0]["pod_name"] == "by-hand"]


def test_the_world_tallies_energy_above_the_site_cap_in_simulated_seconds() -> None:
    figures = SiteFigures(cap_w=1000.0)
    for watts in (900.0, 1200.0, 1100.0):
        figures.add(Frame(0, (), (), (), watts, 20.0), 10.0)
    assert figures.cap_violation_ws == pytest.approx(200.0 * 10 + 100.0 * 10)
    assert figures.max_overshoot_w == pytest.approx(200.0)
    assert figures.energy_j == pytest.approx(3200.0 * 10)


def test_a_tuning_job_from_the_cache_is_played_and_its_node_reports_the_applied_clock() -> None:
    readings = Readings(clock=FakeClock(), wall_clock=lambda: 0.0)
    loop = WorldLoop(flat_scenario(chat_rps=2.0), readings, WorldSettings(speed=10))
    nodes = [node("rack-a-n0", "rack-a"), node("rack-a-n1", "rack-a")]
    pods = [pod("chat-0", node_name="rack-a-n0"), pod("chat-1", node_name="rack-a-n1")]
    job = freeze(tuning_job(GpuTuningMode.APPLY, node="rack-a-n0"))
    for k in range(8):
        loop.step(pods, nodes, k)
    for k in range(8, 8 + 40):  # eight clocks of 50 s at 10 s steps
        loop.step(pods, nodes, k, [job])
    assert loop.answers == []
    loop.step(pods, nodes, 48, [job])
    (answer,) = loop.answers
    applied = answer.document["appliedClockMHz"]
    assert answer.order.node == "rack-a-n0"
    assert applied < loop.tuning.gpu.max_clock_mhz
    clocks = {
        labels["Hostname"]: value
        for labels, value, _ in samples(scrape(readings), "DCGM_FI_DEV_SM_CLOCK")
    }
    assert clocks == {"rack-a-n0": applied, "rack-a-n1": loop.tuning.gpu.max_clock_mhz}
