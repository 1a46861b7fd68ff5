"""A cold start: the twin from a deployment just rolled out, as the live demo starts."""

from __future__ import annotations

from climatik.sim.engine import Twin
from climatik.sim.scenario import load_scenario


def test_a_cold_start_begins_at_the_minimum_replicas_and_serves_less_at_first() -> None:
    scenario = load_scenario("default")
    warm = Twin(scenario, policies=["headroom"], hours=0.1, start_hour=12.0).run()
    cold = Twin(scenario, policies=["headroom"], hours=0.1, start_hour=12.0, cold_start=True).run()
    minimum = [float(s.min_replicas) for s in scenario.services]
    assert cold.history.replicas[0][0].tolist() == minimum
    assert warm.history.replicas[0][0].tolist() != minimum
    # Its first replicas start (a minute) before they serve: fewer tokens in the first minutes.
    assert cold.policies["headroom"]["tokens"] < warm.policies["headroom"]["tokens"]
