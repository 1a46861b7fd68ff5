"""The datacenter the world plays, one step at a time: the twin's own serving, power and heat
steps applied to the pods that really exist instead of the twin's replicas.

Given the pods (their service, node and whether they serve yet), the nodes (rack and GPUs) and
the simulated time, a step computes each service's demand (the scenario's arrival series, as
the twin computes it), its fluid queue and utilisation (`sim.steps_serve.serve`, with the
cluster's pods in place of the twin's servers), each pod's GPU and server-overhead watts and
each node's power (`sim.physics`), and the inlets (`sim.steps_heat.move_heat`, the room's heat
matrix with the cluster's nodes in the twin's server slots). No I/O and no clock: the driver
brings the cluster's state and the time.

Cluster nodes take the twin's server slots rack by rack: racks in name order fill the scenario's
racks, nodes in name order a rack's slots (wrapping when the cluster is larger than the room;
nodes sharing a slot add their heat). A slot with no node draws nothing.

Each node has an SM clock (the maximum unless a GPU-tuning Job locked another, see
`world.tuning`): a pod's GPUs draw at its node's clock, and a service serves at the mean clock of
the nodes its serving pods run on (the twin's `Timing` is per service).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from climatik.policies.ceiling_settings import HeadroomSettings, ThresholdSettings
from climatik.sim import physics
from climatik.sim.backlog import AgedQueue
from climatik.sim.policy_specs import POLICY_SPECS
from climatik.sim.scenario import Scenario
from climatik.sim.state import Fleet, Room, Timing
from climatik.sim.steps_heat import move_heat
from climatik.sim.steps_power import Drawn
from climatik.sim.steps_serve import serve
from climatik.sim.world import FloatArray, IntArray, World, build_world


@dataclass(frozen=True, slots=True)
class PodSeat:
    """One inference pod as the world sees it."""

    key: str
    """namespace/name"""
    service: str
    """The scenario service whose demand it serves."""
    node: str
    gpus: int
    serving: bool
    """Ready and past its model's start-up time: it takes requests."""
    model_name: str | None = None
    """The model the pod says it serves (vLLM's `--model`), for vLLM's `model_name` label."""


@dataclass(frozen=True, slots=True)
class NodeSeat:
    name: str
    rack: str
    gpus: int


@dataclass(frozen=True, slots=True)
class PodLoad:
    key: str
    service: str
    node: str
    gpus: int
    tokens_per_s: float
    running_requests: float
    waiting_requests: float
    gpu_watts: float
    """All of the pod's GPUs together."""
    cpu_watts: float
    """The server's overhead that follows the pod's GPU work (fans, CPUs, memory, network)."""
    model_name: str | None = None
    sm_clock_mhz: float | None = None
    """Its node's SM clock (None: the maximum)."""


@dataclass(frozen=True, slots=True)
class NodeLoad:
    name: str
    rack: str
    power_w: float
    """The whole server: floor plus every pod's GPU and overhead watts."""
    floor_w: float
    """Base power and the idle draw of the GPUs no pod holds."""
    inlet_c: float


@dataclass(frozen=True, slots=True)
class ServiceLoad:
    name: str
    demand_rps: float
    served_rps: float
    tokens_per_s: float
    queue: float
    serving: int
    """Pods taking requests."""
    utilisation: float
    slo_met_fraction: float
    """Of the requests that arrived in the step, the share meeting the SLOs."""


@dataclass(frozen=True, slots=True)
class Frame:
    """What one step of the world computed."""

    step: int
    pods: tuple[PodLoad, ...]
    nodes: tuple[NodeLoad, ...]
    services: tuple[ServiceLoad, ...]
    site_w: float
    supply_c: float


def twin_world(scenario: Scenario) -> World:
    """The twin's fixed inputs for the scenario (one uncapped policy: the world caps nothing;
    the controller does, through the cluster)."""
    return build_world(
        scenario,
        [POLICY_SPECS["uncapped"]],
        scenario.duration_h,
        HeadroomSettings(),
        ThresholdSettings(),
        exact=False,
    )


def slot_of_nodes(world: World, nodes: Sequence[NodeSeat]) -> dict[str, int]:
    """Each node's server slot in the room's heat matrix (see the module docstring)."""
    racks = sorted({n.rack for n in nodes})
    slots: dict[str, int] = {}
    for r, rack in enumerate(racks):
        in_rack = sorted(n.name for n in nodes if n.rack == rack)
        for s, name in enumerate(in_rack):
            slots[name] = (r % world.n_rack) * world.per_rack + s % world.per_rack
    return slots


class Site:
    """The world's state between steps: each service's queue and the room's air."""

    def __init__(self, scenario: Scenario, world: World | None = None) -> None:
        self.scenario = scenario
        self.world = world or twin_world(scenario)
        self.services = tuple(s.name for s in scenario.services)
        self._timing = Timing.at(np.ones((1, self.world.n_svc)), scenario)
        self._queue = np.zeros((1, self.world.n_svc))
        self._aged = {
            j: AgedQueue.empty(1, s.slo.ttft_s, s.queue_timeout_s, self.world.dt)
            for j, s in enumerate(scenario.services)
            if s.deferrable
        }
        """Deferrable services' queues by age, kept across steps as the twin keeps them."""
        n_srv = self.world.n_srv
        self._room = Room(
            srv_w=np.zeros((1, n_srv)),
            inlet=np.zeros((1, n_srv)),
            rise=np.zeros((1, n_srv)),
            supply=np.zeros(1),
        )
        self._steps = 0

    def demand_rps(self, step: int) -> FloatArray:
        """Each service's arrivals per second at a step (the scenario's series, wrapped)."""
        rates: FloatArray = self.world.rates[step % self.world.steps]
        return rates

    def step(
        self,
        pods: Sequence[PodSeat],
        nodes: Sequence[NodeSeat],
        step: int,
        demand_rps: FloatArray | None = None,
        node_clock: Mapping[str, float] | None = None,
    ) -> Frame:
        """Advance one scenario step (`world.dt` simulated seconds) at step index `step`;
        `demand_rps` replaces the scenario's arrivals (per service) when given; `node_clock`
        is each node's SM clock as a share of the maximum (absent: the maximum)."""
        index = {name: j for j, name in enumerate(self.services)}
        node_names = {n.name for n in nodes}
        seated = [p for p in pods if p.service in index and p.node in node_names]
        lam = np.asarray(
            self.demand_rps(step) if demand_rps is None else demand_rps, dtype=np.float64
        )
        clock = {p.key: (node_clock or {}).get(p.node, 1.0) for p in seated}
        self._set_service_clocks(seated, index, clock)
        served = self._serve(seated, index, lam, step)
        pod_loads = self._pod_loads(seated, index, served, clock)
        floor_w, node_w = self._node_power(nodes, pod_loads)
        site_w, supply_c, inlet_c = self._move_heat(nodes, node_w)
        return Frame(
            step=step,
            pods=tuple(pod_loads),
            nodes=tuple(
                NodeLoad(
                    name=n.name,
                    rack=n.rack,
                    power_w=node_w[n.name],
                    floor_w=floor_w[n.name],
                    inlet_c=inlet_c[n.name],
                )
                for n in nodes
            ),
            services=tuple(
                ServiceLoad(
                    name=name,
                    demand_rps=float(lam[j]),
                    served_rps=float(served.rps[j]),
                    tokens_per_s=float(served.rps[j] * self.world.out_tokens[j]),
                    queue=float(served.queue[j]),
                    serving=int(served.serving[j]),
                    utilisation=float(served.util[j]),
                    slo_met_fraction=float(served.met[j] / served.arrived[j])
                    if served.arrived[j] > 0
                    else 1.0,
                )
                for j, name in enumerate(self.services)
            ),
            site_w=site_w,
            supply_c=supply_c,
        )

    def _set_service_clocks(
        self, seated: Sequence[PodSeat], index: Mapping[str, int], clock: Mapping[str, float]
    ) -> None:
        """Each service's clock for the serving step: the mean of its serving pods' clocks."""
        wanted = np.ones(len(self.services))
        for j in range(len(self.services)):
            mine = [clock[p.key] for p in seated if index[p.service] == j and p.serving]
            if mine:
                wanted[j] = sum(mine) / len(mine)
        if not np.array_equal(wanted, self._timing.clock[0]):
            self._timing.clock[0] = wanted
            self._timing.update(self.scenario)

    def _serve(
        self, seated: Sequence[PodSeat], index: Mapping[str, int], lam: FloatArray, step: int
    ) -> _Served:
        """The twin's serving step, with the pods as its replicas (one policy)."""
        host = np.array([[index[p.service] for p in seated]], dtype=np.int64).reshape(1, -1)
        ready_at = np.array([[0.0 if p.serving else math.inf for p in seated]]).reshape(1, -1)
        fleet = _fleet(host, ready_at, self._queue, self._aged)
        served = serve(self.world, self._timing, fleet, lam, now_s=step * self.world.dt)
        self._queue = fleet.queue
        return _Served(
            util=served.util[0],
            queue=served.queue[0],
            serving=(served.onehot[0] & served.ready[0][:, None]).sum(axis=0),
            rps=served.tokens[0] / (self.world.dt * self.world.out_tokens),
            arrived=np.asarray(served.arrived, dtype=np.float64).reshape(-1),
            met=served.met[0],
        )

    def _pod_loads(
        self,
        seated: Sequence[PodSeat],
        index: Mapping[str, int],
        served: _Served,
        clock: Mapping[str, float],
    ) -> list[PodLoad]:
        """Each pod's share of its service's work, and the GPU and server-overhead watts that
        work draws at its node's clock (a pod not yet serving idles)."""
        racks = self.scenario.racks
        gpu = racks.gpu_curve
        loads: list[PodLoad] = []
        for pod in seated:
            j = index[pod.service]
            svc = self.scenario.services[j]
            share = float(served.util[j]) if pod.serving else 0.0
            pre_s, dec_s = physics.request_busy_s(
                svc.model_class, svc.prompt_tokens, svc.output_tokens, clock[pod.key]
            )
            busy_pre = share * float(pre_s / (pre_s + dec_s))
            gpu_w = float(physics.gpu_power_w(clock[pod.key], busy_pre, share - busy_pre, gpu))
            with_overhead_w = float(
                physics.server_power_w(gpu_w, pod.gpus, gpu.idle_w, 0.0, racks.server_gpu_overhead)
            )
            per_pod = max(int(served.serving[j]), 1)
            tokens_per_s = float(served.rps[j]) * svc.output_tokens / per_pod
            loads.append(
                PodLoad(
                    key=pod.key,
                    service=pod.service,
                    node=pod.node,
                    gpus=pod.gpus,
                    tokens_per_s=tokens_per_s if pod.serving else 0.0,
                    running_requests=share * svc.model_class.max_batch,
                    waiting_requests=float(served.queue[j]) / per_pod if pod.serving else 0.0,
                    gpu_watts=pod.gpus * gpu_w,
                    cpu_watts=with_overhead_w - pod.gpus * gpu_w,
                    model_name=pod.model_name,
                    sm_clock_mhz=clock[pod.key] * gpu.max_clock_mhz,
                )
            )
        return loads

    def _node_power(
        self, nodes: Sequence[NodeSeat], pod_loads: Sequence[PodLoad]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Each node's floor (base power, free GPUs idle) and its whole power with its pods."""
        racks = self.scenario.racks
        idle_w = racks.gpu_curve.idle_w
        floor_w: dict[str, float] = {}
        node_w: dict[str, float] = {}
        for node in nodes:
            on_node = [p for p in pod_loads if p.node == node.name]
            free = max(node.gpus - sum(p.gpus for p in on_node), 0)
            floor_w[node.name] = float(
                physics.server_power_w(
                    idle_w, free, idle_w, racks.server_base_w, racks.server_gpu_overhead
                )
            )
            node_w[node.name] = floor_w[node.name] + sum(p.gpu_watts + p.cpu_watts for p in on_node)
        return floor_w, node_w

    def _move_heat(
        self, nodes: Sequence[NodeSeat], node_w: Mapping[str, float]
    ) -> tuple[float, float, dict[str, float]]:
        """The twin's heat step with the nodes in the room's server slots: (site watts, supply
        air, each node's inlet)."""
        world = self.world
        slots = slot_of_nodes(world, nodes)
        srv_w = np.zeros((1, world.n_srv))
        for name, slot in slots.items():
            srv_w[0, slot] += node_w[name]
        self._room.srv_w = srv_w
        drawn = Drawn(
            site_w=srv_w.sum(axis=1),
            rack_w=srv_w.reshape(1, world.n_rack, world.per_rack).sum(axis=2),
            svc_w=np.zeros((1, world.n_svc)),
        )
        cooled = move_heat(world, self._room, drawn, first=self._steps == 0)
        self._steps += 1
        inlet = self._room.inlet[0]
        return (
            float(drawn.site_w[0]),
            float(cooled.supply_now[0]),
            {name: float(inlet[slot]) for name, slot in slots.items()},
        )


@dataclass(frozen=True, slots=True, eq=False)
class _Served:
    """One step's serving per service (the twin's `Served` for the world's one policy)."""

    util: FloatArray
    queue: FloatArray
    serving: IntArray
    """Pods taking requests."""
    rps: FloatArray
    """Requests served per second."""
    arrived: FloatArray
    met: FloatArray


def _fleet(
    host: IntArray, ready_at: FloatArray, queue: FloatArray, aged: dict[int, AgedQueue]
) -> Fleet:
    """A fleet of the given replicas for `serve`, which reads only hosts, readiness, the queue
    and deferrable services' queues by age; the autoscaler's memory stays empty (the cluster's
    autoscaler is KEDA)."""
    n_svc = queue.shape[1]
    return Fleet(
        host=host,
        ready_at=ready_at,
        born=np.zeros(host.shape),
        rr_next=np.zeros(1, dtype=np.int64),
        queue=queue.copy(),
        wanted=np.zeros((1, n_svc), dtype=np.int64),
        rec_hist=np.zeros((1, 1, n_svc), dtype=np.int64),
        aged=aged,
        migrated_at=np.full(1, -np.inf),
    )


def assign_service(name: str, assigned: Mapping[str, str], scenario_services: Sequence[str]) -> str:
    """The scenario service that drives a newly seen cluster service: its namesake, else the
    first scenario service nobody drives yet, else the next in turn. Earlier choices stand."""
    if name in scenario_services:
        return name
    used = set(assigned.values())
    for candidate in scenario_services:
        if candidate not in used:
            return candidate
    return scenario_services[len(assigned) % len(scenario_services)]
