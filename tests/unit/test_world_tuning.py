"""The world plays the cluster's GPU-tuning Jobs: it reads the Job the reconciler builds, holds
each clock of its sweep on the Job's node for the sweep's time, chooses with the controller's
own rule, answers with the document `climatik gpu-tune` writes, and keeps an applied clock,
which the node's pods then draw and serve at."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from climatik.domain.config import GpuTuningConfig, GpuTuningMode, PowerCappingConfig, SloBounds
from climatik.domain.gpu import ClockSample, result_configmap_name
from climatik.domain.gpu_tune_result import TuneMode
from climatik.kube.store import freeze
from climatik.policies.gpu_clock import ClockBounds, choose_gpu_clock
from climatik.policies.gpu_tuning import watts_scale
from climatik.reconcilers.gpu_tuning import build_job
from climatik.reconcilers.settings import GpuTuningSettings
from climatik.world.site import Site
from climatik.world.tuning import TuneOrder, TuningPlayer, read_tune_job
from tests.unit.test_world_site import NODES, chat_pod, flat_scenario

NODE = NODES[0].name
NODE_SEATS = {n.name: n for n in NODES}
PER_CLOCK_S = 50.0
"""The Job's default settle (20 s) and measure (30 s) time per clock."""


def job(
    mode: GpuTuningMode, node: str = NODE, max_latency_s: float | None = None
) -> dict[str, Any]:
    config = PowerCappingConfig(
        namespace="serving",
        name="cap",
        generation=1,
        power_cap_w=1000,
        gpu_tuning=GpuTuningConfig(
            mode=mode, slo=SloBounds(max_inter_token_latency_s=max_latency_s)
        ),
    )
    settings = GpuTuningSettings(job_namespace="gpu-tuning", allowed_namespaces=["serving"])
    built: dict[str, Any] = json.loads(
        json.dumps(build_job(config, node, [], settings, datetime(2026, 12, 7, 12, tzinfo=UTC)))
    )
    built["metadata"]["uid"] = f"uid-{mode}-{node}"
    return built


def order(mode: GpuTuningMode, max_latency_s: float | None = None) -> TuneOrder:
    read = read_tune_job(freeze(job(mode, max_latency_s=max_latency_s)))
    assert read is not None
    return read


def test_the_reconcilers_job_is_read_as_it_asks() -> None:
    read = order(GpuTuningMode.APPLY, max_latency_s=0.05)
    assert read.node == NODE
    assert read.mode is TuneMode.APPLY
    assert read.bounds == ClockBounds(GpuTuningSettings().max_throughput_loss, 0.05)
    assert read.result_configmap == f"gpu-tuning/{result_configmap_name(NODE)}"
    assert order(GpuTuningMode.RECOMMEND).mode is TuneMode.RECOMMEND


@pytest.mark.parametrize("drop", ["nodeName", "--result-configmap"])
def test_a_job_naming_no_node_or_no_result_is_not_played(drop: str) -> None:
    built = job(GpuTuningMode.APPLY)
    spec = built["spec"]["template"]["spec"]
    if drop == "nodeName":
        del spec["nodeName"]
    else:
        args = spec["containers"][0]["args"]
        del args[args.index(drop) : args.index(drop) + 2]
    assert read_tune_job(built) is None


def test_an_applied_sweep_holds_each_clock_then_keeps_the_best_on_its_node_only() -> None:
    scenario = flat_scenario()
    player = TuningPlayer(scenario)
    apply = order(GpuTuningMode.APPLY)
    top = player.gpu.max_clock_mhz
    assert player.take([apply], [chat_pod(0, NODE)], NODE_SEATS, now_s=1000.0) == []
    held = [player.clock_mhz(NODE, 1000.0 + PER_CLOCK_S * (i + 0.5)) for i in range(8)]
    assert held[0] == top
    assert held == sorted(held, reverse=True)
    assert len(set(held)) == 8
    assert player.clock_mhz(NODES[1].name, 1100.0) == top
    assert player.finish(1000.0 + 8 * PER_CLOCK_S - 1) == []

    (outcome,) = player.finish(1000.0 + 8 * PER_CLOCK_S)
    document = outcome.document
    assert document["node"] == NODE
    assert document["plannedClocksMHz"] == held
    samples = [
        ClockSample(s["clockMHz"], s["watts"], s["tokensPerSecond"], s["p99TokenLatencySeconds"])
        for s in document["samples"]
    ]
    chosen = choose_gpu_clock(samples, apply.bounds)
    assert document["choice"]["clockMHz"] == chosen.clock_mhz < top
    assert document["appliedClockMHz"] == chosen.clock_mhz
    assert player.clock_mhz(NODE, 5000.0) == chosen.clock_mhz
    assert player.clock_mhz(NODES[1].name, 5000.0) == top
    scale = watts_scale(document)
    assert scale is not None
    assert scale < 1.0


def test_a_recommendation_puts_the_nodes_clock_back_and_changes_no_watts() -> None:
    player = TuningPlayer(flat_scenario())
    player.take([order(GpuTuningMode.RECOMMEND)], [chat_pod(0, NODE)], NODE_SEATS, 0.0)
    assert player.clock_mhz(NODE, 3 * PER_CLOCK_S) < player.gpu.max_clock_mhz
    (outcome,) = player.finish(8 * PER_CLOCK_S)
    assert outcome.document["appliedClockMHz"] is None
    assert outcome.document["choice"]["clockMHz"] < player.gpu.max_clock_mhz
    assert watts_scale(outcome.document) is None
    assert player.clock_mhz(NODE, 9 * PER_CLOCK_S) == player.gpu.max_clock_mhz


def test_a_node_serving_nothing_answers_at_once_with_an_error_and_a_job_is_played_once() -> None:
    player = TuningPlayer(flat_scenario())
    apply = order(GpuTuningMode.APPLY)
    (outcome,) = player.take([apply], [chat_pod(0, NODES[1].name)], NODE_SEATS, 0.0)
    assert outcome.document["error"]["reason"] == "NoWorkload"
    assert outcome.document["appliedClockMHz"] is None
    assert player.take([apply], [chat_pod(0, NODE)], NODE_SEATS, 10.0) == []
    assert player.clock_mhz(NODE, 20.0) == player.gpu.max_clock_mhz


def lock_job(clock: str | None, node: str = NODE) -> dict[str, Any]:
    """The reconciler's Job turned into a Lock: `--mode lock --clock-mhz <clock>`."""
    built = job(GpuTuningMode.APPLY, node)
    built["metadata"]["uid"] = f"uid-lock-{clock}-{node}"
    args = built["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--mode") + 1] = "lock"
    if clock is not None:
        args += ["--clock-mhz", clock]
    return built


def lock_order(clock: int, node: str = NODE) -> TuneOrder:
    read = read_tune_job(freeze(lock_job(str(clock), node)))
    assert read is not None
    return read


def test_a_lock_job_is_read_with_its_clock_and_one_without_a_clock_is_not_played() -> None:
    read = lock_order(1400)
    assert read.mode is TuneMode.LOCK
    assert read.clock_mhz == 1400
    assert order(GpuTuningMode.APPLY).clock_mhz is None
    assert read_tune_job(lock_job(None)) is None
    assert read_tune_job(lock_job("fast")) is None
    assert read_tune_job(lock_job("0")) is None
    # The CLI refuses a clock with any other mode; the world does not play such a Job.
    applied_with_clock = job(GpuTuningMode.APPLY)
    applied_with_clock["spec"]["template"]["spec"]["containers"][0]["args"] += [
        "--clock-mhz",
        "1400",
    ]
    assert read_tune_job(applied_with_clock) is None


def test_a_lock_ends_at_once_and_keeps_the_highest_supported_clock_not_above_it() -> None:
    """No inference pod on the node: a lock measures nothing, so it needs none."""
    player = TuningPlayer(flat_scenario())
    top = player.gpu.max_clock_mhz
    (outcome,) = player.take([lock_order(1400)], [], NODE_SEATS, now_s=100.0)
    document = outcome.document
    assert "error" not in document
    assert document["mode"] == "lock"
    # The twin's H100 accepts 1980, 1965, ... in 15 MHz steps: 1395 is below 1400.
    assert document["appliedClockMHz"] == 1395
    assert document["requestedClockMHz"] == 1400
    assert document["plannedClocksMHz"] == [1395]
    assert document["node"] == NODE
    assert len(document["gpus"]) == NODE_SEATS[NODE].gpus
    assert {g["smClockMHz"] for g in document["gpus"]} == {top}
    assert player.clock_mhz(NODE, 100.0) == 1395
    assert player.clock_mhz(NODE, 100_000.0) == 1395
    assert player.clock_mhz(NODES[1].name, 100.0) == top
    assert watts_scale(document) is None
    assert player.finish(100_000.0) == []

    (again,) = player.take([lock_order(100)], [], NODE_SEATS, now_s=200.0)
    assert again.document["appliedClockMHz"] == min(player.supported_mhz)
    assert {g["smClockMHz"] for g in again.document["gpus"]} == {1395}
    assert player.clock_mhz(NODE, 200.0) == min(player.supported_mhz)


def test_a_lock_on_a_node_being_swept_is_refused_in_use_and_one_without_gpus_no_gpu() -> None:
    player = TuningPlayer(flat_scenario())
    player.take([order(GpuTuningMode.RECOMMEND)], [chat_pod(0, NODE)], NODE_SEATS, 0.0)
    swept = player.clock_mhz(NODE, 10.0)
    (refused,) = player.take([lock_order(1400)], [], NODE_SEATS, 10.0)
    assert refused.document["error"]["reason"] == "InUse"
    assert refused.document["appliedClockMHz"] is None
    assert refused.document["requestedClockMHz"] == 1400
    assert player.clock_mhz(NODE, 10.0) == swept
    assert NODE not in player.locked_mhz
    (outcome,) = player.finish(8 * PER_CLOCK_S)
    assert outcome.order.mode is TuneMode.RECOMMEND
    assert player.clock_mhz(NODE, 8 * PER_CLOCK_S) == player.gpu.max_clock_mhz

    (no_gpu,) = player.take([lock_order(1400, node="cpu-only")], [], NODE_SEATS, 20.0)
    assert no_gpu.document["error"]["reason"] == "NoGpu"
    assert "cpu-only" not in player.locked_mhz


def test_a_pod_on_a_slower_node_draws_less_and_a_saturated_service_serves_less() -> None:
    scenario = flat_scenario(chat_rps=40.0)
    pods = [chat_pod(0, NODE), chat_pod(1, NODES[1].name)]
    fast = Site(scenario).step(pods, NODES, 0)
    slow = Site(scenario).step(pods, NODES, 0, node_clock={NODE: 0.75})
    watts = {p.key: p.gpu_watts for p in slow.pods}
    assert watts["llm/chat-0"] < watts["llm/chat-1"]
    assert [p.gpu_watts for p in fast.pods][1] == pytest.approx(watts["llm/chat-1"])
    assert slow.services[0].served_rps < fast.services[0].served_rps
    assert {p.key: p.sm_clock_mhz for p in slow.pods} == {
        "llm/chat-0": pytest.approx(0.75 * scenario.racks.gpu_curve.max_clock_mhz),
        "llm/chat-1": pytest.approx(scenario.racks.gpu_curve.max_clock_mhz),
    }
