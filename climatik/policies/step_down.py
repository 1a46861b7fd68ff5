"""The wait between two step-downs of one target's ceiling (`policy.stepDownIntervalSeconds`).

Measured power lags a step-down: the pods a lower ceiling removes take a while to terminate,
Kepler and DCGM rates average over a window, Prometheus scrapes on its own period. A decision
taken inside that lag still sees the old power and would step down again, over-correcting. So
once a target's ceiling is stepped down, the next step-down of that target waits at least the
interval; until then its ceiling holds (`CeilingReason.STEP_DOWN_WAITING`).

Two exceptions keep the cap safe: when the measured power is above the cap itself (a breach,
not just the capping threshold), or the plan's power model predicts the running replicas above
it (`CeilingPlan.breach_ahead`), a step-down never waits; nor does the fail-safe ceiling (data
missing too long). Raising never waits. A step-down that is not in force (a write refused on a
conflict, or a ceiling raised again since) makes nothing wait.

Pure: the last step-down of each target travels in `CappingState.step_downs`. That memory lives
in the leader's process, so a leader restart forgets it; the new leader may then step down
sooner than the interval, never later: the safe direction.
"""

from __future__ import annotations

from dataclasses import replace

from climatik.domain.capping import (
    CapObservation,
    CappingState,
    CeilingAction,
    CeilingDecision,
    CeilingPlan,
    CeilingReason,
    StepDown,
    TargetObservation,
)

EARLY_S = 1.0
"""A decision this much before the interval is over counts as on time. Decisions are spaced by
the control interval counted from when each reconcile began, and the measuring before each
decision takes a varying fraction of a second: without this slack a 30 s interval at the 15 s
control interval would step down every 30 s or every 45 s by chance."""


def space_step_downs(
    plan: CeilingPlan,
    observation: CapObservation,
    state: CappingState,
    interval_s: float,
    now_s: float,
) -> CeilingPlan:
    """`plan` with each step-down that comes too soon after the target's last one held back,
    and the step-downs it makes remembered in its state.

    `state` is the state the plan was decided from (its `step_downs` are the last ones);
    `now_s` is the plan's clock. Targets that left the scope are forgotten.
    """
    targets = {t.name: t for t in observation.targets}
    decisions: list[CeilingDecision] = []
    step_downs: dict[str, StepDown] = {}
    for decision in plan.decisions:
        target = targets[decision.target]
        last = state.step_downs.get(decision.target)
        if last is not None and target.applied_max_replicas > last.to_replicas:
            last = None  # not in force: nothing to wait for
        final = decision
        if (
            not (observation.breached or plan.breach_ahead)
            and last is not None
            and decision.action is CeilingAction.LOWER
            and now_s - last.at_s < interval_s - EARLY_S
        ):
            final = _held(decision, target, last, interval_s, now_s)
        if final.new_max_replicas < final.previous_max_replicas:
            step_downs[final.target] = StepDown(at_s=now_s, to_replicas=final.new_max_replicas)
        elif last is not None:
            step_downs[final.target] = last
        decisions.append(final)
    waited = any(a is not b for a, b in zip(decisions, plan.decisions, strict=True))
    new_state = replace(plan.state, step_downs=step_downs)
    if not waited:
        return replace(plan, state=new_state)
    # The plan's prediction assumed the step-downs that now wait: it no longer describes the
    # ceilings in force, so neither the next prediction error nor the twin's clocks use it.
    return replace(
        plan,
        decisions=tuple(decisions),
        state=replace(new_state, predicted_w=None),
        predicted_w=None,
    )


def _held(
    decision: CeilingDecision,
    target: TargetObservation,
    last: StepDown,
    interval_s: float,
    now_s: float,
) -> CeilingDecision:
    """The ceiling in force instead of the step-down (within the user's own bounds, which a
    user's edit may have moved below it)."""
    hold = max(target.min_replicas, min(target.user_max_replicas, target.applied_max_replicas))
    if hold <= decision.new_max_replicas:
        return decision
    return replace(
        decision,
        new_max_replicas=hold,
        action=CeilingAction.HOLD if hold == decision.previous_max_replicas else decision.action,
        code=CeilingReason.STEP_DOWN_WAITING,
        reason=(
            f"last step-down {now_s - last.at_s:.0f} s ago (interval {interval_s:.0f} s): "
            f"holding {hold}, not {decision.new_max_replicas} ({decision.reason})"
        ),
        planned_watts=None,
    )
