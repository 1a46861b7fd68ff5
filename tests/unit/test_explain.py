"""`climatik explain` renders what the controller wrote, in words."""

from __future__ import annotations

from climatik.api.explain import explain

CONFIG = {
    "metadata": {"name": "cap", "namespace": "serving", "generation": 2},
    "spec": {"powerCapLimit": 1000, "policy": {"type": "Threshold"}},
    "status": {
        "observedGeneration": 2,
        "measuredPowerWatts": 990,
        "effectiveCapWatts": 900,
        "effectiveCapSource": "Carbon",
        "targets": [
            {
                "name": "llm",
                "kind": "ScaledObject",
                "currentReplicas": 3,
                "userMaxReplicas": 10,
                "appliedMaxReplicas": 3,
                "wattsPerReplica": 330,
                "tokensPerWatt": 0.1,
            }
        ],
        "lastDecision": {
            "time": "2026-11-29T12:00:00Z",
            "action": "Cap",
            "reason": "llm: 110% of the cap >= 95%: ceiling = current (3)",
        },
        "conditions": [
            {
                "type": "MetricsAvailable",
                "status": "True",
                "reason": "MetricsAvailable",
                "message": "every power reading is fresh",
                "lastTransitionTime": "2026-11-29T11:00:00Z",
            }
        ],
    },
}


def test_explain_names_the_cap_its_source_the_decision_and_the_held_ceiling() -> None:
    text = explain(CONFIG)
    assert "Cap in force: 900 W (lowered for grid carbon)" in text
    assert "Measured power: 990 W, 110% of the cap" in text
    assert "Last decision (2026-11-29 12:00:00 UTC): Cap. llm: 110%" in text
    assert "ScaledObject llm: 3 running, ceiling 3 (the user's own maximum is 10)" in text
    assert "MetricsAvailable: yes" in text


def test_explain_without_status_says_so() -> None:
    text = explain({"metadata": {"name": "new"}, "spec": {"powerCapLimit": 500}})
    assert "has not reported" in text


def test_explain_flags_a_spec_not_yet_acted_on() -> None:
    stale = {**CONFIG, "metadata": {**CONFIG["metadata"], "generation": 3}}
    assert "has not been acted on yet" in explain(stale)
