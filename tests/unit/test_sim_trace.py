"""The twin's trace (issue 17's replay): what it records of a run, and the series it writes."""

from __future__ import annotations

from collections import defaultdict

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from climatik.sim.engine import Twin
from climatik.sim.scenario import load_scenario
from climatik.sim.trace import (
    TRACE_NAMESPACE,
    Trace,
    TraceRecorder,
    decisions,
    record_trace,
    trace_openmetrics,
)

START_S = 1_800_000_000.0


@pytest.fixture(scope="module")
def trace() -> Trace:
    return record_trace(load_scenario("default"), start_hour=14.0, minutes=10)


def test_the_trace_holds_every_control_interval_with_one_pod_per_replica(trace: Trace) -> None:
    # The first decision waits for a whole lagged window (45 s) to be measured.
    assert len(trace.rounds) == 10 * 60 / trace.interval_s - 2
    assert [r.at_s for r in trace.rounds] == [i * trace.interval_s for i in range(18)]
    for rnd in trace.rounds:
        assert rnd.have_data
        assert rnd.cap_w == trace.site_cap_w
        for target in rnd.targets:
            assert len(target.pods) == len(target.pod_nodes) == target.replicas
            assert target.min_replicas <= target.ceiling <= target.user_max_replicas
    # Each decision's ceiling is the next decision's ceiling in force.
    for before, after in zip(trace.rounds, trace.rounds[1:], strict=False):
        assert [t.ceiling for t in before.targets] == [
            t.applied_max_replicas for t in after.targets
        ]
    # Noiseless: the site's reading is its servers' sum, as Prometheus' sum is.
    middle = trace.rounds[9]
    assert middle.site_w == pytest.approx(sum(middle.node_watts), rel=1e-12)


def test_recording_changes_nothing_in_the_run() -> None:
    scenario = load_scenario("default")
    plain = Twin(scenario, ["headroom"], hours=0.2, start_hour=14.0).run()
    trace = Trace("default", "headroom", 14.0, 30.0, 30.0, 50_000.0, (), ())
    tapped = Twin(scenario, ["headroom"], hours=0.2, start_hour=14.0).run(
        tap=TraceRecorder(trace, 0)
    )
    assert tapped.policies == plain.policies
    assert trace.rounds


def test_the_json_form_round_trips(trace: Trace) -> None:
    again = Trace.from_json(trace.to_json())
    assert again == trace
    assert decisions(again) == decisions(trace)


def test_the_openmetrics_form_reads_back_as_the_twins_readings(trace: Trace) -> None:
    """Gauges hold each pod's share at the decision time; each counter rises by the rate over
    the half window before it and never falls."""
    text = trace_openmetrics(trace, START_S)
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = defaultdict(
        list
    )
    # prometheus_client's OpenMetrics parser (untyped): the format promtool reads, strictly.
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            assert sample.timestamp is not None
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key].append((float(sample.timestamp), sample.value))
    rnd = trace.rounds[7]
    at = START_S + rnd.at_s
    half = trace.window_s / 2
    chat = rnd.targets[0]
    pod = chat.pods[0]
    vllm = (("namespace", TRACE_NAMESPACE), ("pod", pod))
    kepler = (
        ("node_name", chat.pod_nodes[0]),
        ("pod_name", pod),
        ("pod_namespace", TRACE_NAMESPACE),
        ("state", "running"),
        ("zone", "package"),
    )
    assert dict(samples["kepler_pod_cpu_watts", kepler])[at] == pytest.approx(
        chat.watts / len(chat.pods)
    )
    assert dict(samples["vllm:num_requests_waiting", vllm])[at] == pytest.approx(
        chat.waiting_requests / len(chat.pods)
    )
    tokens = dict(samples["vllm:generation_tokens_total", vllm])
    assert (tokens[at] - tokens[at - half]) / half == pytest.approx(
        chat.tokens_per_s / len(chat.pods)
    )
    finished = dict(samples["vllm:e2e_request_latency_seconds_count", vllm])
    assert tokens[at] - tokens[at - half] == pytest.approx(
        (finished[at] - finished[at - half]) * chat.tokens_per_request
    )
    for (name, _), series in samples.items():
        if name.endswith(("_total", "_count")):
            values = [v for _, v in sorted(series)]
            assert values == sorted(values), name
    node = (("node_name", trace.nodes[3]), ("zone", "package"))
    assert dict(samples["kepler_node_cpu_watts", node])[at] == rnd.node_watts[3]
