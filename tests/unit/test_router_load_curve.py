"""The live router learns each endpoint's load curve as the twin's router does: counters read
from a pod's `/metrics` make windows (shared `LoadWindows`), the fit lands in the endpoint's
reading, sends are counted over the TTFT budget, and the budgets come from the settings."""

from __future__ import annotations

import pytest

from climatik.domain.routing import LoadCounters
from climatik.policies.load_curve import LoadWindows, RecentSends
from climatik.router.scores import parse_load
from climatik.router.settings import load_router_settings
from climatik.router.slices import Upstream
from climatik.router.table import CounterTotals, EndpointTable, Scores


def metrics_text(
    *, decode_s: float, tokens: float, energy_mj: float, old_name: bool = False
) -> str:
    histogram = (
        "vllm:time_per_output_token_seconds" if old_name else "vllm:inter_token_latency_seconds"
    )
    return "\n".join(
        [
            f"# TYPE {histogram} histogram",
            f'{histogram}_bucket{{le="0.05",model_name="m"}} {tokens}',
            f'{histogram}_sum{{model_name="m"}} {decode_s}',
            f'{histogram}_count{{model_name="m"}} {tokens}',
            'vllm:request_prefill_time_seconds_sum{model_name="m"} 2.0',
            'vllm:request_prefill_time_seconds_count{model_name="m"} 8',
            'vllm:num_requests_running{model_name="m"} 3',
            'vllm:num_requests_waiting{model_name="m"} 0',
            f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0"}} {energy_mj / 2}',
            f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="1"}} {energy_mj / 2}',
        ]
    )


def test_the_curve_counters_are_read_from_a_pods_metrics_under_either_vllm_name() -> None:
    for old_name in (False, True):
        scores = parse_load(
            metrics_text(decode_s=4.0, tokens=200, energy_mj=9000, old_name=old_name)
        )
        assert scores.running == 3.0
        assert scores.counters == CounterTotals(4.0, 200.0, 9.0, 2.0, 8.0)


def test_without_an_energy_counter_a_pod_gives_load_but_no_curve_counters() -> None:
    text = metrics_text(decode_s=4.0, tokens=200, energy_mj=0).replace("DCGM", "# DCGM")
    scores = parse_load(text)
    assert scores.running == 3.0
    assert scores.counters is None


def counters(t: float, batch: float, tpot_s: float, watts: float) -> LoadCounters:
    """Counters after `t` seconds at a steady batch: decoding seconds, tokens and joules."""
    return LoadCounters(t, batch * t, batch * t / tpot_s, watts * t)


def test_windows_follow_the_counters_and_restart_after_a_reset() -> None:
    windows = LoadWindows()
    assert windows.add(counters(0.0, 4, 0.02, 300)) is None
    window = windows.add(counters(10.0, 4, 0.02, 300))
    assert window is not None
    assert window.batch == pytest.approx(4.0)
    assert window.tpot_s == pytest.approx(0.02)
    assert windows.curve is not None
    assert windows.curve.watts_at(4) == pytest.approx(300.0)
    # The pod restarted: its counters fell, so no window spans the reset.
    assert windows.add(LoadCounters(20.0, 1.0, 10.0, 5.0)) is None
    assert len(windows.windows) == 1
    assert windows.add(LoadCounters(30.0, 1.0, 10.0, 3005.0)) is not None  # idle: no tokens
    assert len(windows.windows) == 1


def test_recent_sends_count_only_within_the_horizon() -> None:
    sends = RecentSends()
    for t in (0.0, 1.0, 2.5):
        sends.sent(t)
    assert sends.within(2.0, 2.9) == 2
    assert sends.within(2.0, 3.0) == 1  # the send at 1.0 is 2 s old: out
    assert sends.within(2.0, 10.0) == 0
    sends.sent(11.0)
    assert sends.within(None, 11.0) == 0


def test_the_table_fits_each_endpoints_curve_from_its_reads_and_counts_its_sends() -> None:
    now = [0.0]
    table = EndpointTable(clock=lambda: now[0], sends_horizon_s=2.0)
    table.set_upstreams(
        [Upstream("a", "llm", "10.0.0.1", 8000), Upstream("b", "llm", "10.0.0.2", 8000)]
    )
    # Two regimes: 10 s at batch 2 (20 ms per token, 200 W), then 10 s at batch 8 (30 ms, 320 W).
    first = counters(10.0, 2, 0.02, 200)
    second = counters(10.0, 8, 0.03, 320)
    reads = [
        LoadCounters(0.0, 0.0, 0.0, 0.0),
        first,
        LoadCounters(
            20.0,
            first.decode_s + second.decode_s,
            first.decode_tokens + second.decode_tokens,
            first.gpu_joules + second.gpu_joules,
        ),
    ]
    for read in reads:
        totals = CounterTotals(read.decode_s, read.decode_tokens, read.gpu_joules)
        scores = Scores(running=1, waiting=0, counters=totals)
        table.record("a", scores, read_at=read.t, source="pods")
    now[0] = 20.5
    table.opened("a")
    table.opened("a")
    now[0] = 21.0
    table.opened("a")
    a, b = table.readings()
    assert b.curve is None
    assert a.curve is not None
    assert a.curve.tpot_s_at(2) == pytest.approx(0.02)
    assert a.curve.tpot_s_at(8) == pytest.approx(0.03)
    assert a.curve.watts_at(8) == pytest.approx(320.0)
    assert a.sent_recently == 3
    now[0] = 22.7
    assert table.readings()[0].sent_recently == 1


def test_the_budgets_are_off_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_ROUTER__SERVICE", "vllm")
    picker = load_router_settings().routing.picker()
    assert (picker.tpot_budget_s, picker.ttft_budget_s) == (None, None)
    monkeypatch.setenv("CLIMATIK_ROUTER__ROUTING__TPOT_BUDGET_S", "0.05")
    monkeypatch.setenv("CLIMATIK_ROUTER__ROUTING__TTFT_BUDGET_S", "2")
    picker = load_router_settings().routing.picker()
    assert (picker.tpot_budget_s, picker.ttft_budget_s) == (0.05, 2.0)
