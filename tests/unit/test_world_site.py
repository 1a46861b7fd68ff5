"""The world's step: the twin's serving, power and heat applied to the pods that exist.

A scenario with flat demand makes the figures checkable by hand: a service's requests are
shared by its serving pods, a pod's GPUs draw what its utilisation makes them draw, a node is
its floor plus its pods, and its inlet follows its heat.
"""

from __future__ import annotations

import numpy as np
import pytest

from climatik.sim import physics
from climatik.sim.scenario import Scenario, parse_scenario
from climatik.world.site import NodeSeat, PodSeat, Site, assign_service, slot_of_nodes

NODES = [NodeSeat(f"{rack}-n{i}", rack, 8) for rack in ("rack-a", "rack-b") for i in range(4)]


def flat_scenario(chat_rps: float = 4.0, batch_rps: float = 10.0) -> Scenario:
    flat = {
        "trough_fraction": 1.0,
        "weekend_fraction": 1.0,
        "bursts_per_day": 0,
        "noise_fraction": 0,
    }
    return parse_scenario(
        {
            "name": "flat",
            "duration_h": 1,
            "caps": {"site_cap_w": 80000},
            "services": [
                {"name": "chat", "traffic": {**flat, "peak_rps": chat_rps}},
                {
                    "name": "summarise",
                    "model": "llama-8b-dp8",
                    "traffic": {**flat, "peak_rps": batch_rps},
                },
            ],
        }
    )


def chat_pod(i: int, node: str, *, serving: bool = True) -> PodSeat:
    return PodSeat(f"llm/chat-{i}", "chat", node, 8, serving)


def test_demand_is_the_scenarios_arrival_series() -> None:
    site = Site(flat_scenario(chat_rps=2.0, batch_rps=10.0))
    frame = site.step([], NODES, 3)
    assert [s.demand_rps for s in frame.services] == pytest.approx([2.0, 10.0])
    assert frame.services[0].demand_rps == pytest.approx(site.world.rates[3, 0])


def test_a_service_under_capacity_serves_its_demand_shared_by_its_serving_pods() -> None:
    scenario = flat_scenario(chat_rps=2.0)
    one = Site(scenario).step([chat_pod(0, "rack-a-n0")], NODES, 0)
    two = Site(scenario).step([chat_pod(0, "rack-a-n0"), chat_pod(1, "rack-b-n0")], NODES, 0)
    chat_one, chat_two = one.services[0], two.services[0]
    assert chat_one.served_rps == pytest.approx(2.0)
    assert chat_two.served_rps == pytest.approx(2.0)
    assert chat_two.utilisation == pytest.approx(chat_one.utilisation / 2)
    tokens_one = one.pods[0].tokens_per_s
    assert tokens_one == pytest.approx(2.0 * 256)
    assert [p.tokens_per_s for p in two.pods] == pytest.approx([tokens_one / 2] * 2)
    # Per-pod load falls, so does each pod's power; the pod's node follows.
    assert two.pods[0].gpu_watts < one.pods[0].gpu_watts
    node_one = next(n for n in one.nodes if n.name == "rack-a-n0")
    node_two = next(n for n in two.nodes if n.name == "rack-a-n0")
    assert node_two.power_w < node_one.power_w


def test_a_pods_power_is_the_twins_gpu_and_server_model_at_its_utilisation() -> None:
    scenario = flat_scenario(chat_rps=2.0)
    frame = Site(scenario).step([chat_pod(0, "rack-a-n0")], NODES, 0)
    gpu, racks = scenario.racks.gpu_curve, scenario.racks
    util = frame.services[0].utilisation
    model = scenario.services[0].model_class
    pre, dec = physics.request_busy_s(model, 1024, 256, 1.0)
    busy_pre = util * float(pre / (pre + dec))
    gpu_w = float(physics.gpu_power_w(1.0, busy_pre, util - busy_pre, gpu))
    pod = frame.pods[0]
    assert pod.gpu_watts == pytest.approx(8 * gpu_w)
    assert pod.cpu_watts == pytest.approx(racks.server_gpu_overhead * 8 * (gpu_w - gpu.idle_w))
    node = next(n for n in frame.nodes if n.name == "rack-a-n0")
    assert node.power_w == pytest.approx(racks.server_base_w + pod.gpu_watts + pod.cpu_watts)
    # A node without pods draws what the twin calls an idle server.
    empty = next(n for n in frame.nodes if n.name == "rack-b-n3")
    assert empty.power_w == pytest.approx(racks.idle_server_w)
    assert frame.site_w == pytest.approx(sum(n.power_w for n in frame.nodes))


def test_over_capacity_the_queue_grows_and_is_shared_as_waiting_requests() -> None:
    site = Site(flat_scenario(chat_rps=40.0))
    pods = [chat_pod(0, "rack-a-n0"), chat_pod(1, "rack-a-n1")]
    first = site.step(pods, NODES, 0)
    second = site.step(pods, NODES, 1)
    assert first.services[0].utilisation == pytest.approx(1.0)
    assert second.services[0].queue > first.services[0].queue > 0
    assert sum(p.waiting_requests for p in second.pods) == pytest.approx(second.services[0].queue)
    max_batch = site.scenario.services[0].model_class.max_batch
    assert [p.running_requests for p in second.pods] == pytest.approx([max_batch] * 2)


def test_a_pod_not_yet_serving_idles_and_takes_no_requests() -> None:
    site = Site(flat_scenario(chat_rps=2.0))
    frame = site.step([chat_pod(0, "rack-a-n0"), chat_pod(1, "rack-a-n1", serving=False)], NODES, 0)
    starting = frame.pods[1]
    assert starting.tokens_per_s == 0
    assert starting.waiting_requests == 0
    assert starting.gpu_watts == pytest.approx(8 * site.scenario.racks.gpu_curve.idle_w)
    assert frame.services[0].serving == 1
    assert frame.pods[0].tokens_per_s == pytest.approx(2.0 * 256)


def test_pods_of_unknown_services_or_off_rack_nodes_are_not_seated() -> None:
    site = Site(flat_scenario())
    stray = [PodSeat("llm/x", "nobody", "rack-a-n0", 8, True), chat_pod(0, "elsewhere")]
    frame = site.step(stray, NODES, 0)
    assert frame.pods == ()
    assert frame.services[0].serving == 0


def test_a_nodes_inlet_warms_with_its_power_and_lags_behind_it() -> None:
    site = Site(flat_scenario(chat_rps=12.0))
    idle = site.step([], NODES, 0)
    pods = [chat_pod(i, f"rack-a-n{i}") for i in range(4)]
    loaded = [site.step(pods, NODES, k) for k in range(1, 40)]

    def rise(frame_index: int) -> float:
        frame = loaded[frame_index]
        node = next(n for n in frame.nodes if n.name == "rack-a-n3")
        return node.inlet_c - frame.supply_c

    idle_rise = next(n for n in idle.nodes if n.name == "rack-a-n3").inlet_c - idle.supply_c
    assert idle_rise < rise(0) < rise(38)
    assert all(n.inlet_c >= f.supply_c for f in loaded for n in f.nodes)


def test_nodes_take_the_rooms_slots_rack_by_rack_and_wrap() -> None:
    world = Site(flat_scenario()).world  # 2 racks x 4 servers
    slots = slot_of_nodes(world, [*NODES, NodeSeat("rack-c-n0", "rack-c", 8)])
    assert slots["rack-a-n0"] == 0
    assert slots["rack-a-n3"] == 3
    assert slots["rack-b-n0"] == 4
    assert slots["rack-c-n0"] == 0  # a third rack shares the first rack's slots
    assert np.unique([slots[n.name] for n in NODES]).size == 8


def test_a_service_is_driven_by_its_namesake_else_the_next_free_one() -> None:
    scenario = ["chat", "summarise"]
    assigned: dict[str, str] = {}
    for name in ("llm", "chat", "other", "more"):
        assigned[name] = assign_service(name, assigned, scenario)
    assert assigned == {"llm": "chat", "chat": "chat", "other": "summarise", "more": "summarise"}
