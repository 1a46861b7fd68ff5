"""A twin trace: what the controller read at each control interval, and the ceilings it decided.

Issue 17 asks that a trace recorded by the twin, fed through the live path (backfilled into a
real Prometheus, read by the reconciler's own queries), give the same ceilings. This module
records one policy of a run (`record_trace`) and writes it in the two forms the replay needs:

- `trace_openmetrics`: the series the live queries read, under their exact names and labels
  (Kepler >= 0.10 pod and node power, vLLM's token and finished-request counters and its
  waiting gauge), stamped so that each query evaluated at a decision time returns what the
  twin read then. The twin's measurement model (lag, window mean, noise) is applied before
  export: the trace holds the twin's readings, so the replay tests everything from the query
  on (the observation builder, the learned idle draw, the policy and its state).
- `Trace.to_json`: the cluster's side at each decision (each target's replicas, pods and their
  nodes, ceiling in force, whether its autoscaler wants more) and the ceilings decided.

How a reading becomes series: a gauge (power, waiting requests) is one sample at the decision
time, the reading split evenly over the target's pods; a counter (tokens, finished requests)
gets two samples per pod, half a window apart and ending at the decision, rising by the rate
times that span: the rate over a window equal to the control interval then sees exactly these
two (Prometheus 3's ranges are open on the left) and returns the twin's rate. The live tokens
window must therefore be the twin's measurement window, at most the control interval.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from climatik.sim.engine import Twin
from climatik.sim.scenario import Scenario
from climatik.sim.state import TwinState
from climatik.sim.steps_measure import Reading
from climatik.sim.world import IntArray, World

TRACE_NAMESPACE = "replay"
"""The namespace of the trace's pods (the live queries select a target's pods by namespace)."""

COUNTER_BASE = 1.0e6
"""Every counter starts here, far from 0: Prometheus' rate would otherwise clamp its
extrapolation at the counter's zero point."""


def node_name(server: int) -> str:
    """The node of the twin's server `server` (zero-padded, so by name is by index)."""
    return f"node-{server:02d}"


def rack_name(rack: int) -> str:
    """A rack's label value, as the twin names its racks (`sim.views.rack_observations`)."""
    return f"rack-{rack}"


def pod_name(service: str, server: int) -> str:
    """The pod of `service` on `server` (one replica per server in the twin)."""
    return f"{service}-{node_name(server)}"


@dataclass(frozen=True, slots=True)
class TracedTarget:
    """One target at one decision: the cluster's side, what was read of it, what was decided."""

    name: str
    pods: tuple[str, ...]
    pod_nodes: tuple[str, ...]
    replicas: int
    min_replicas: int
    user_max_replicas: int
    applied_max_replicas: int
    """The ceiling in force when the decision began."""
    limited_by_ceiling: bool
    """The autoscaler wants more replicas than the ceiling (KEDA's `ScalingLimited`)."""
    priority: int
    deferrable: bool
    watts: float
    tokens_per_s: float
    waiting_requests: float
    tokens_per_request: float
    ceiling: int = -1
    """The ceiling the twin decided (-1 until `after`)."""


@dataclass(frozen=True, slots=True)
class TracedRound:
    """One control interval of the traced policy."""

    at_s: float
    """Seconds since the trace's first decision."""
    have_data: bool
    site_w: float
    node_watts: tuple[float, ...]
    """Each server's measured watts, in node order."""
    targets: tuple[TracedTarget, ...]
    cap_w: float = 0.0
    idle_w: float | None = None
    """The idle draw the twin had learned when it decided (diagnostic)."""


@dataclass(slots=True)
class Trace:
    """A short run of one policy on one scenario, as the controller saw and decided it."""

    scenario: str
    policy: str
    start_hour: float
    interval_s: float
    window_s: float
    site_cap_w: float
    nodes: tuple[str, ...]
    node_racks: tuple[str, ...]
    rounds: list[TracedRound] = field(default_factory=list)
    rack_max_w: float | None = None
    """Each rack's power limit (a config's `rackConstraints`); None: the scenario sets none."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        raw = json.loads(text)
        rounds = [
            TracedRound(
                **{
                    **r,
                    "node_watts": tuple(r["node_watts"]),
                    "targets": tuple(
                        TracedTarget(
                            **{**t, "pods": tuple(t["pods"]), "pod_nodes": tuple(t["pod_nodes"])}
                        )
                        for t in r["targets"]
                    ),
                }
            )
            for r in raw.pop("rounds")
        ]
        return cls(
            **{**raw, "nodes": tuple(raw["nodes"]), "node_racks": tuple(raw["node_racks"])},
            rounds=rounds,
        )


class TraceRecorder:
    """A `ControlTap` that records policy `policy` of a run into `trace`."""

    def __init__(self, trace: Trace, policy_index: int) -> None:
        self.trace = trace
        self._p = policy_index
        self._first_s: float | None = None

    def before(
        self, world: World, st: TwinState, reading: Reading, n_tot: IntArray, now_s: float
    ) -> None:
        p = self._p
        if self._first_s is None:
            self._first_s = now_s
        host = st.fleet.host[p]
        targets = []
        for j, service in enumerate(world.scenario.services):
            servers = [int(i) for i in np.flatnonzero(host == j)]
            targets.append(
                TracedTarget(
                    name=service.name,
                    pods=tuple(pod_name(service.name, i) for i in servers),
                    pod_nodes=tuple(node_name(i) for i in servers),
                    replicas=int(n_tot[p, j]),
                    min_replicas=service.min_replicas,
                    user_max_replicas=service.max_replicas,
                    applied_max_replicas=int(st.control.ceiling[p, j]),
                    limited_by_ceiling=bool(st.fleet.wanted[p, j] > st.control.ceiling[p, j]),
                    priority=service.priority,
                    deferrable=service.deferrable,
                    watts=float(reading.svc_w[p, j]),
                    tokens_per_s=float(reading.svc_tok[p, j]),
                    waiting_requests=float(reading.svc_queue[p, j]),
                    tokens_per_request=float(world.out_tokens[j]),
                )
            )
        idle_w = st.seen.idle[p].watts
        self.trace.rounds.append(
            TracedRound(
                at_s=now_s - self._first_s,
                have_data=bool(reading.have_data),
                site_w=float(reading.site_w[p]),
                node_watts=tuple(float(w) for w in reading.srv_w[p]),
                targets=tuple(targets),
                idle_w=None if idle_w is None else float(idle_w),
            )
        )

    def after(self, world: World, st: TwinState) -> None:
        p = self._p
        last = self.trace.rounds[-1]
        decided = tuple(
            _with_ceiling(t, int(st.control.ceiling[p, j])) for j, t in enumerate(last.targets)
        )
        self.trace.rounds[-1] = TracedRound(
            at_s=last.at_s,
            have_data=last.have_data,
            site_w=last.site_w,
            node_watts=last.node_watts,
            targets=decided,
            cap_w=float(st.control.cap_eff[p]),
            idle_w=last.idle_w,
        )


def _with_ceiling(target: TracedTarget, ceiling: int) -> TracedTarget:
    fields = asdict(target)
    fields.update(ceiling=ceiling)
    return TracedTarget(**fields)


def record_trace(
    scenario: Scenario,
    *,
    policy: str = "headroom",
    start_hour: float = 14.0,
    minutes: float = 40.0,
    noiseless: bool = True,
) -> Trace:
    """Run `minutes` of `scenario` from `start_hour` and record `policy`'s control intervals.

    `noiseless` drops the twin's measurement noise: it draws each quantity's noise apart (the
    site's, each server's, each service's), so the site's reading is not the sum of its
    servers' as Prometheus' sums are; without it the live queries' sums are the twin's figures.
    """
    if noiseless:
        measurement = scenario.measurement.model_copy(update={"noise_fraction": 0.0})
        scenario = scenario.model_copy(update={"measurement": measurement})
    servers = scenario.racks.count * scenario.racks.servers_per_rack
    trace = Trace(
        scenario=scenario.name,
        policy=policy,
        start_hour=start_hour,
        interval_s=scenario.control_interval_s,
        window_s=scenario.measurement.window_s,
        site_cap_w=scenario.caps.site_cap_w,
        rack_max_w=scenario.caps.rack_max_w,
        nodes=tuple(node_name(i) for i in range(servers)),
        node_racks=tuple(rack_name(i // scenario.racks.servers_per_rack) for i in range(servers)),
    )
    twin = Twin(scenario, [policy], hours=minutes / 60.0, start_hour=start_hour)
    twin.run(tap=TraceRecorder(trace, 0))
    return trace


# --- OpenMetrics -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Family:
    kind: str
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, labels: str, at_s: float, value: float) -> None:
        self.series.setdefault(labels, []).append((at_s, value))


def _labels(**pairs: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs.items())


def trace_openmetrics(trace: Trace, start_unix_s: float) -> str:
    """The trace's readings as OpenMetrics text for `promtool tsdb create-blocks-from
    openmetrics`, the first decision at `start_unix_s` (see the module docstring)."""
    families: dict[str, _Family] = {
        "kepler_pod_cpu_watts": _Family("gauge"),
        "kepler_node_cpu_watts": _Family("gauge"),
        "kepler_node_gpu_watts": _Family("gauge"),
        "vllm:num_requests_waiting": _Family("gauge"),
        "vllm:generation_tokens_total": _Family("counter"),
        "vllm:e2e_request_latency_seconds_count": _Family("unknown"),
    }
    counters: dict[tuple[str, str], float] = {}
    half_s = trace.window_s / 2.0
    for rnd in trace.rounds:
        if not rnd.have_data:
            continue
        at = start_unix_s + rnd.at_s
        for node, watts in zip(trace.nodes, rnd.node_watts, strict=True):
            # The twin measures a server whole: all of it on the package zone, no GPU split.
            families["kepler_node_cpu_watts"].add(
                _labels(node_name=node, zone="package"), at, watts
            )
            families["kepler_node_gpu_watts"].add(_labels(node_name=node), at, 0.0)
        for target in rnd.targets:
            pods = len(target.pods)
            for pod, node in zip(target.pods, target.pod_nodes, strict=True):
                kepler = _labels(pod_namespace=TRACE_NAMESPACE, pod_name=pod, node_name=node)
                vllm = _labels(namespace=TRACE_NAMESPACE, pod=pod)
                families["kepler_pod_cpu_watts"].add(
                    f'{kepler},zone="package",state="running"', at, target.watts / pods
                )
                families["vllm:num_requests_waiting"].add(vllm, at, target.waiting_requests / pods)
                tokens_per_s = target.tokens_per_s / pods
                for metric, rate in (
                    ("vllm:generation_tokens_total", tokens_per_s),
                    (
                        "vllm:e2e_request_latency_seconds_count",
                        tokens_per_s / target.tokens_per_request,
                    ),
                ):
                    start = counters.get((metric, pod), COUNTER_BASE)
                    end = start + rate * half_s
                    families[metric].add(vllm, at - half_s, start)
                    families[metric].add(vllm, at, end)
                    counters[metric, pod] = end
    return "".join(_render(families)) + "# EOF\n"


def _render(families: dict[str, _Family]) -> Iterator[str]:
    for name, family in families.items():
        if not family.series:
            continue
        declared = name.removesuffix("_total") if family.kind == "counter" else name
        yield f"# TYPE {declared} {family.kind}\n"
        for labels, samples in sorted(family.series.items()):
            for at_s, value in sorted(samples):
                yield f"{name}{{{labels}}} {value!r} {at_s:.3f}\n"


def decisions(trace: Trace) -> Sequence[dict[str, int]]:
    """The traced policy's ceilings per decision, by target name."""
    return [{t.name: t.ceiling for t in r.targets} for r in trace.rounds]
