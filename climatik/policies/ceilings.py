"""Replica ceilings from measured power: the heart of power capping.

Two policies turn one `CapObservation` into one `CeilingPlan`:

- `threshold`: the design document's rule, literally. At 80 % of the cap (or a rack approaching
  its limits) the ceiling becomes current + 1; at 95 % (or a rack at its limits) it becomes the
  current replica count; below 80 % it is released to the user's own maximum.
- `headroom` (the default): learns each target's watts per replica from measurements (an
  asymmetric moving average that rises fast and decays slowly, with outlier clipping), and sets
  ceilings so that the learned watts of every allowed replica, plus the load under the cap that
  no target accounts for, fit in the cap minus a safety margin. Running replicas are kept first,
  the most efficient targets (tokens per joule) keep theirs longest; growth is shared by a
  divisor (D'Hondt) rule weighted by efficiency and bounded per decision. A hysteresis band
  keeps ceilings still while the estimate wobbles, and under the cap a lowered ceiling steps
  down gradually (above it, or predicted above it, at once).

  Power follows work, not replicas: where a target's demand is measured
  (`TargetObservation.demand_tokens_per_s`), a replica is charged what it will add. A target's
  predicted watts with n replicas are n x the node's idle draw (when measured under the cap)
  plus its learned dynamic energy per token times the tokens n replicas serve: its demand, or
  n x a full replica's when that is less. So the replicas a demand needs cost its dynamic
  power, and further replicas (shorter queues, better latency) cost only the idle draw they
  would have drawn anyway. Without a demand signal every replica is charged its learned
  full-load watts, as before. Replicas an autoscaler has just added while held by the ceiling
  are all charged a full load: it sees a demand step before the demand estimate does, and they
  draw once their model has loaded; predicted over the cap itself, they are cut at once.

Guarantees of both: ceilings stay within [min replicas, user max]; missing data (`None`) never
lowers a ceiling; after `max_data_age_s` without data the configured safe ceiling applies; below
a breach of the cap (measured or predicted), a target's step-downs are at least
`step_down_interval_s` apart.
The functions are pure: the learner's memory travels in the returned `CappingState`.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace

from climatik.domain.capping import (
    CapObservation,
    CappingState,
    CeilingAction,
    CeilingDecision,
    CeilingPlan,
    CeilingReason,
    TargetLearnerState,
    TargetObservation,
)
from climatik.policies.ceiling_settings import (
    CeilingSettings,
    FailSafeSettings,
    HeadroomSettings,
    ThresholdSettings,
)
from climatik.policies.power_model import (
    demand_watts,
    full_dynamic_watts,
    learn_energy_model,
    learn_watts_per_replica,
    saturated,
)
from climatik.policies.step_down import space_step_downs


def decide_replica_ceilings(
    observation: CapObservation,
    settings: CeilingSettings,
    state: CappingState,
    now_s: float,
) -> CeilingPlan:
    """Decide the next ceilings of every target of one capped scope.

    `now_s` is any monotonic clock in seconds (the controller's loop time or the twin's simulated
    time); it measures how long data has been missing and how long ago a target's ceiling was
    last stepped down (a step-down sooner than `step_down_interval_s` after the last waits,
    unless power is above the cap itself or the fail-safe applies: `policies/step_down.py`).
    """
    if isinstance(settings, ThresholdSettings):
        plan = _decide_threshold(observation, settings, state, now_s)
    else:
        plan = _decide_headroom(observation, settings, state, now_s)
    return space_step_downs(plan, observation, state, settings.step_down_interval_s, now_s)


def _clamp(value: int, target: TargetObservation) -> int:
    return max(target.min_replicas, min(target.user_max_replicas, value))


def _action(previous: int, new: int, target: TargetObservation) -> CeilingAction:
    if new == previous:
        return CeilingAction.HOLD
    if new < previous:
        return CeilingAction.LOWER
    if new == target.user_max_replicas:
        return CeilingAction.RESTORE
    return CeilingAction.RAISE


def _decision(
    target: TargetObservation,
    new: int,
    code: CeilingReason,
    reason: str,
    *,
    planned_w: float | None = None,
    predicted_w: float | None = None,
) -> CeilingDecision:
    new = _clamp(new, target)
    return CeilingDecision(
        target=target.name,
        previous_max_replicas=target.applied_max_replicas,
        new_max_replicas=new,
        action=_action(target.applied_max_replicas, new, target),
        code=code,
        reason=reason,
        planned_watts=planned_w,
        predicted_watts=predicted_w,
    )


def _missing_data_plan(
    observation: CapObservation,
    fail_safe: FailSafeSettings,
    state: CappingState,
    now_s: float,
    what: str,
) -> CeilingPlan:
    """Hold while data is young enough to wait for, then the safe ceiling. Never lower on a gap."""
    since_s = state.no_data_since_s if state.no_data_since_s is not None else now_s
    missing_for_s = max(0.0, now_s - since_s)
    new_state = replace(state, no_data_since_s=since_s, predicted_w=None)
    expired = missing_for_s >= fail_safe.max_data_age_s
    decisions = []
    for target in observation.targets:
        if expired and fail_safe.safe_max_replicas is not None:
            new = _clamp(fail_safe.safe_max_replicas, target)
            reason = (
                f"{what} for {missing_for_s:.0f} s (limit {fail_safe.max_data_age_s:.0f} s): "
                f"safe ceiling {new}"
            )
            decision = _decision(target, new, CeilingReason.SAFE_CEILING, reason)
            if decision.changed:
                decision = replace(decision, action=CeilingAction.SAFE)
        else:
            hold = _clamp(target.applied_max_replicas, target)
            reason = f"{what} for {missing_for_s:.0f} s: holding ceiling {hold}"
            decision = _decision(target, hold, CeilingReason.NO_POWER_DATA, reason)
        decisions.append(decision)
    return CeilingPlan(
        scope=observation.scope,
        decisions=tuple(decisions),
        state=new_state,
        reason=what,
    )


# --- threshold -------------------------------------------------------------------------------


def _decide_threshold(
    observation: CapObservation,
    settings: ThresholdSettings,
    state: CappingState,
    now_s: float,
) -> CeilingPlan:
    if observation.measured_w is None:
        return _missing_data_plan(observation, settings.fail_safe, state, now_s, "no power data")
    state = replace(state, no_data_since_s=None, last_scope_data_s=now_s)
    share = observation.measured_w / observation.cap_w
    rack_at_limit = any(r.at_limit for r in observation.racks)
    rack_near = any(r.approaching_limit for r in observation.racks)
    pct = f"{share:.1%} of the {observation.cap_w:.0f} W cap"
    decisions = []
    for target in observation.targets:
        if share >= settings.limit_fraction or rack_at_limit:
            if share < settings.limit_fraction:
                code, why = CeilingReason.RACK_AT_LIMIT, "a rack is at its limit"
            else:
                code, why = CeilingReason.POWER_AT_LIMIT, f"power at {pct}"
            new = target.current_replicas
            reason = f"{why}: ceiling = current replicas ({new})"
        elif share >= settings.approach_fraction or rack_near:
            if share < settings.approach_fraction:
                code, why = CeilingReason.RACK_NEAR_LIMIT, "a rack approaches its limit"
            else:
                code, why = CeilingReason.POWER_NEAR_LIMIT, f"power at {pct}"
            new = target.current_replicas + 1
            reason = f"{why}: ceiling = current replicas + 1 ({new})"
        else:
            code = CeilingReason.BELOW_THRESHOLD
            new = target.user_max_replicas
            reason = f"power at {pct}: released to the user's max ({new})"
        decisions.append(_decision(target, new, code, reason))
    return CeilingPlan(scope=observation.scope, decisions=tuple(decisions), state=state, reason=pct)


# --- headroom --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """Working row of one target during allocation."""

    target: TargetObservation
    watts_per_replica: float
    weight: float
    keep_upto: int
    grow_upto: int
    hold_upto: int
    """`grow_upto`, or the ceiling in force when higher: what the loose plan may keep."""
    pressing: bool
    fixed_w: float = 0.0
    """Per replica, the idle draw of its node (when measured under the cap)."""
    demand_w: float | None = None
    """Dynamic watts the target's demand asks for; `None`: unknown, every replica is charged
    `watts_per_replica`."""
    full_dynamic_w: float | None = None
    """Dynamic watts of one replica at full load, from the energy model; `None`: the learned
    `watts_per_replica` less the idle draw."""
    rising: bool = False
    """The autoscaler added replicas within the last `settle_rounds` decisions: some may still
    be loading their model, not yet drawing what they will."""

    def full_w(self) -> float:
        """Dynamic watts of one replica at full load: the energy model's, else (never seen
        saturated) the learned `watts_per_replica` less the idle draw, or the running
        replicas' share of the demand's dynamic watts where that is more.

        A replica never seen saturated has drawn less than its full load, so its measured
        draw only bounds that from below; after a demand step its replicas take the demand
        asked of them until they saturate (then the model learns their full load). Capping
        each at its low-load draw charged replicas just added about two thirds of what they
        drew at the first step of a demo.

        Except where the replicas are saturated at a settled count (a backlog beyond what they
        serve, and none just added): they draw their full load already, and the backlog is
        work waiting, not watts they can draw. Shared over them, it charged each more the
        fewer were left, so every cut called for the next: on `carbon-swing` with the
        summariser's minimum at 0, chat fell from 7 replicas to 1 in under five minutes at
        30 kW of a 50 kW cap, and the summariser was held at 0-2 replicas for the 34 hours
        left (`docs/simulate.md`)."""
        if self.full_dynamic_w is not None:
            return self.full_dynamic_w
        measured_w = max(0.0, self.watts_per_replica - self.fixed_w)
        running = self.target.current_replicas
        if self.demand_w is None or running <= 0:
            return measured_w
        demand_w = self.demand_w
        target = self.target
        served = target.tokens_per_s
        if not self.rising and saturated(target) and served and target.demand_tokens_per_s:
            # Saturated at a settled count: what they serve is what a full replica serves.
            demand_w *= served / target.demand_tokens_per_s
        return max(measured_w, demand_w / running)

    def replica_w(self, k: int) -> float:
        """What the k-th replica (1-based) adds: its node's idle draw plus the dynamic power
        of the demand it takes, at most a full replica's."""
        if self.demand_w is None:
            return self.watts_per_replica
        full_w = self.full_w()
        return self.fixed_w + min(full_w, max(0.0, self.demand_w - (k - 1) * full_w))

    def watts(self, replicas: int) -> float:
        """Predicted watts of `replicas` replicas (no idle credit)."""
        return sum(self.replica_w(k) for k in range(1, replicas + 1))

    def scaled_up_against_its_ceiling(self) -> _Slot:
        """This row with every running replica busy: the autoscaler has just added replicas
        and is still held by the ceiling.

        The autoscaler sees a demand step before the demand estimate does (a backlog counts
        in it over a minute of draining), and its new replicas draw their load only once
        their model has loaded: scaled up to the ceiling and wanting more, it says each will
        serve a full load (its own, as learned). Only while the new replicas settle: held by
        the ceiling at a steady count, the measured demand decides."""
        target = self.target
        if not self.rising or self.demand_w is None or target.limited_by_ceiling is not True:
            return self
        busy_w = target.current_replicas * self.full_w()
        return self if busy_w <= self.demand_w else replace(self, demand_w=busy_w)

    def charged_as_measured(self, measured_over: int) -> _Slot:
        """This row with its running replicas charged at least what they draw now.

        Over the cap, the measurement outranks a model still learning a new level (after a
        demand step the energy model waits for settled rounds): the dynamic part of every
        replica scales so the running replicas cost their measured share, and what more
        replicas would add scales alike. `measured_over` is the count the measurement
        describes: after a fall it still holds the removed replicas' draw, so it is shared
        over the count before the fall.
        """
        target = self.target
        n = target.current_replicas
        if target.watts is None or n <= 0:
            return self
        measured_w = target.watts * n / max(n, measured_over)
        predicted_w = self.watts(n)
        if measured_w <= predicted_w:
            return self
        if self.demand_w is None:
            return replace(self, watts_per_replica=measured_w / n)
        dynamic_w = predicted_w - n * self.fixed_w
        if dynamic_w <= 0:
            # No dynamic share predicted: the measured excess is spread evenly.
            per_replica_w = (measured_w - n * self.fixed_w) / n
            return replace(self, demand_w=per_replica_w * n, full_dynamic_w=per_replica_w)
        scale = (measured_w - n * self.fixed_w) / dynamic_w
        return replace(self, demand_w=self.demand_w * scale, full_dynamic_w=self.full_w() * scale)


def _priority_sequence(slots: list[_Slot], start: list[int], stop: list[int]) -> list[int]:
    """The order in which replicas are granted: a divisor rule weighted by efficiency.

    The sequence does not depend on the budget, so granting a prefix of it keeps every target's
    ceiling monotone in the available watts.
    """
    # A heap of (-priority, -weight, index): the higher priority tier first, then the divisor
    # rule's weight, the lower index on a tie.
    heap = [
        (-slot.target.priority, -slot.weight, index)
        for index, slot in enumerate(slots)
        if start[index] < stop[index]
    ]
    heapq.heapify(heap)
    granted = [0] * len(slots)
    order: list[int] = []
    while heap:
        _, _, index = heapq.heappop(heap)
        order.append(index)
        granted[index] += 1
        if start[index] + granted[index] < stop[index]:
            slot = slots[index]
            weight = slot.weight / (granted[index] + 1)
            heapq.heappush(heap, (-slot.target.priority, -weight, index))
    return order


def _allocate(
    slots: list[_Slot],
    budget_w: float,
    *,
    growth_allowance: int | None,
    idle_credit_w: float,
    idle_pool_w: float,
    keep_applied: bool,
    deferrable_budget_w: float | None = None,
) -> list[int]:
    """Ceilings that fit `budget_w`: minimums, then priority tier by tier, then other growth.

    Within a tier (targets of equal `priority`, highest first) running replicas are kept
    first, then targets pressing against their ceiling (the autoscaler wants more) grow; only
    then does the next tier keep its replicas, so batch work yields to interactive serving.
    Growth of targets that are not pressing comes last. The grant order does not depend on the
    budget and granting stops at the first replica that does not fit, so every ceiling is
    monotone in the budget.

    A new replica that lands on an idle node displaces that node's idle draw, already inside
    the measurement: it costs its watts minus `idle_credit_w`, for as long as `idle_pool_w`
    (the untargeted load) can supply the credit. With `keep_applied`, a ceiling already in
    force above the growth bound is kept while the budget allows it, so a ceiling is not
    lowered just because the autoscaler scaled in.

    With `deferrable_budget_w`, a deferrable target's replica is granted only while everything
    granted so far still fits that lower budget; at the first that does not, deferrable grants
    stop (the others go on), so a carbon cap delays batch work without touching interactive
    serving.
    """
    counts = [s.target.min_replicas for s in slots]
    left_w = budget_w - sum(s.watts(c) for c, s in zip(counts, slots, strict=True))
    if left_w < 0:
        return counts
    left_deferrable_w = math.inf
    if deferrable_budget_w is not None:
        left_deferrable_w = left_w - (budget_w - deferrable_budget_w)

    def upto(slot: _Slot) -> int:
        return slot.hold_upto if keep_applied else slot.grow_upto

    # (target index, is growth) in grant order.
    order: list[tuple[int, bool]] = []
    reached = list(counts)
    for tier in sorted({s.target.priority for s in slots}, reverse=True):
        keep_stop = [
            max(c, s.keep_upto) if s.target.priority == tier else c
            for c, s in zip(reached, slots, strict=True)
        ]
        order += [(i, False) for i in _priority_sequence(slots, reached, keep_stop)]
        pressing_stop = [
            max(c, upto(s)) if s.target.priority == tier and s.pressing else c
            for c, s in zip(keep_stop, slots, strict=True)
        ]
        order += [(i, True) for i in _priority_sequence(slots, keep_stop, pressing_stop)]
        reached = pressing_stop
    rest_stop = [max(c, upto(s)) for c, s in zip(reached, slots, strict=True)]
    order += [(i, True) for i in _priority_sequence(slots, reached, rest_stop)]

    allowance = growth_allowance
    pool_w = max(0.0, idle_pool_w)
    deferrable_open = True
    for index, growth in order:
        if growth and allowance == 0:
            continue
        credit = min(idle_credit_w, pool_w) if growth else 0.0
        cost = max(0.0, slots[index].replica_w(counts[index] + 1) - credit)
        if slots[index].target.deferrable:
            # The deferrable grants are a prefix of their own order too: once one misses the
            # carbon budget, no cheaper one after it slips in (that could raise a batch
            # ceiling under a dirty grid), and none of them blocks the grants that follow.
            if not deferrable_open:
                continue
            if cost > left_deferrable_w:
                deferrable_open = False
                continue
        if cost > left_w:
            break
        counts[index] += 1
        left_w -= cost
        left_deferrable_w -= cost
        if growth:
            pool_w -= credit
            if allowance is not None:
                allowance -= 1
    return counts


def _predicted_scope_watts(
    slots: list[_Slot], ceilings: dict[str, int], untargeted_w: float, credit_w: float
) -> float:
    """The scope's power once the ceilings are in force: the load no target accounts for,
    plus each target's model at the replicas it will run (its ceiling where the autoscaler
    wants more, else no more than now), less the idle draw new replicas take over."""
    total_w = untargeted_w
    growth = 0
    for slot in slots:
        target = slot.target
        ceiling = ceilings[target.name]
        replicas = ceiling if target.wants_more_replicas else min(ceiling, target.current_replicas)
        total_w += slot.watts(replicas)
        growth += max(0, replicas - target.current_replicas)
    return total_w - min(untargeted_w, credit_w * growth)


def _unseen_after_fall(slot: _Slot, fell_from: int | None) -> float:
    """What the target's measurement still holds of the replicas it had before a fall: its
    measured watts beyond its model, at most the removed replicas' share of them."""
    target = slot.target
    if fell_from is None or target.watts is None or fell_from <= target.current_replicas:
        return 0.0
    beyond_w = target.watts - slot.watts(target.current_replicas)
    removed_w = target.watts * (fell_from - target.current_replicas) / fell_from
    return max(0.0, min(beyond_w, removed_w))


def _running_watts(slots: list[_Slot], measured_w: float) -> float:
    """What the scope will draw once the replicas an autoscaler has just added serve their
    demand: the measurement, with each such target at its model's watts where those are
    higher. Above the cap itself the cut comes now, before those replicas have loaded their
    model (about a minute) and drawn their load. Every other target counts as measured: at a
    steady count the model's distance from the measurement is its error (and the uncertainty
    it charges), not load to come; so is that of a target without a demand signal."""
    ahead_w = 0.0
    for slot in slots:
        target = slot.target
        if slot.rising and slot.demand_w is not None and target.watts is not None:
            ahead_w += max(0.0, slot.watts(target.current_replicas) - target.watts)
    return measured_w + ahead_w


def _decide_headroom(
    observation: CapObservation,
    settings: HeadroomSettings,
    state: CappingState,
    now_s: float,
) -> CeilingPlan:
    previous_learners = state.targets
    learners = dict(state.targets)
    for target in observation.targets:
        previous = learners.get(target.name, TargetLearnerState())
        learned = learn_watts_per_replica(previous, target, settings, now_s)
        learners[target.name] = learn_energy_model(learned, target, settings)
    # Forget targets that left the scope so a re-created one starts fresh.
    names = {t.name for t in observation.targets}
    learners = {name: s for name, s in learners.items() if name in names}
    state = replace(state, targets=learners)

    if observation.measured_w is None:
        return _missing_data_plan(observation, settings.fail_safe, state, now_s, "no power data")

    known = [
        learners[t.name].watts_per_replica
        for t in observation.targets
        if learners[t.name].watts_per_replica is not None
    ]
    fallback_w = (
        max(w for w in known if w is not None) if known else settings.initial_watts_per_replica
    )

    held: dict[str, tuple[CeilingReason, str]] = {}
    slots: list[_Slot] = []
    targeted_w = 0.0
    reserved_w = 0.0
    efficiencies = {t.name: t.tokens_per_joule for t in observation.targets}
    known_eff = [e for e in efficiencies.values() if e is not None and e > 0]
    best_eff = max(known_eff) if known_eff else None
    for target in observation.targets:
        estimate = learners[target.name].watts_per_replica
        if target.watts is None:
            # Its power is inside the scope's measurement but cannot be separated: keep its
            # ceiling (missing data never lowers) and reserve what it may draw.
            held[target.name] = (
                CeilingReason.NO_TARGET_POWER_DATA,
                "no power data for this target",
            )
            reserved_w += _clamp(target.applied_max_replicas, target) * (estimate or 0.0)
            continue
        if estimate is None:
            estimate = fallback_w
        if estimate is None or estimate <= 0:
            # Its measured watts stay in the untargeted load below.
            held[target.name] = (CeilingReason.NO_ESTIMATE, "no watts-per-replica estimate yet")
            continue
        targeted_w += target.watts
        efficiency = efficiencies[target.name]
        if best_eff is None:
            weight = 1.0
        else:
            weight = max(efficiency or 0.0, settings.min_efficiency_share * best_eff) / best_eff
        # After a fall in its replica count the measurement still holds the removed replicas'
        # draw for a lag and a rate window (`fell_from`): growth waits until it has cleared,
        # or the freed node's idle draw would be credited twice and the ceiling flap.
        step_up = (
            0
            if learners[target.name].fell_from is not None
            else max(
                settings.step_up_replicas,
                math.ceil(settings.step_up_fraction * target.current_replicas),
            )
        )
        slot = _Slot(
            target=target,
            watts_per_replica=max(estimate, settings.idle_watts_per_replica),
            weight=weight,
            keep_upto=min(target.user_max_replicas, target.current_replicas),
            grow_upto=min(target.user_max_replicas, target.current_replicas + step_up),
            hold_upto=min(
                target.user_max_replicas,
                max(target.current_replicas + step_up, target.applied_max_replicas),
            ),
            pressing=target.wants_more_replicas,
            fixed_w=settings.idle_watts_per_replica,
            demand_w=demand_watts(target, learners[target.name], settings),
            full_dynamic_w=full_dynamic_watts(learners[target.name], settings),
            rising=learners[target.name].rose_from is not None,
        )
        slots.append(slot.scaled_up_against_its_ceiling())
    state = replace(state, no_data_since_s=None, last_scope_data_s=now_s)

    # Load under the cap that the allocation does not control: other pods, idle servers, and
    # targets held above (at least what their ceilings may draw).
    untargeted_w = max(0.0, observation.measured_w - targeted_w, reserved_w)
    usable_w = observation.cap_w * (1.0 - settings.safety_margin_fraction)
    # What the power model alone predicts, reported beside the measurement (its error).
    modelled = {s.target.name: s for s in slots}
    over_usable = observation.measured_w > usable_w
    if over_usable:
        # The measurement may still hold replicas removed since the last decision, not those
        # removed before it: over the cap, erring on the side of the higher charge.
        seen = {name: learned.replicas_seen or 0 for name, learned in previous_learners.items()}
        slots = [s.charged_as_measured(seen.get(s.target.name, 0)) for s in slots]
    budget_w = usable_w - untargeted_w
    breach_ahead = observation.breached or (
        _running_watts(slots, observation.measured_w) > observation.cap_w
    )
    hysteresis_w = observation.cap_w * settings.hysteresis_fraction
    strict_w = budget_w - hysteresis_w
    # Watts a fall frees that the measurement still holds (a lag and a rate window after it,
    # `fell_from`): no ceiling rises on them. Spent on another target's growth at once, they
    # came back as a cut the decision after (`oversubscribed`: +2 and +2 replicas after chat's
    # cut, both taken back within two decisions, a step over the cap between).
    unseen_w = sum(_unseen_after_fall(s, learners[s.target.name].fell_from) for s in slots)
    deferrable_budget_w: float | None = None
    if observation.deferrable_cap_w is not None:
        deferrable_budget_w = (
            observation.deferrable_cap_w * (1.0 - settings.safety_margin_fraction) - untargeted_w
        )
    allowance = observation.rack_replica_headroom
    credit_w = settings.idle_watts_per_replica
    # A replica beyond those running lands on an idle node whose draw is already measured.
    credited_w = min(
        untargeted_w,
        credit_w
        * sum(
            max(0, s.target.user_max_replicas - s.target.current_replicas)
            for s in slots
            if s.demand_w is not None
        ),
    )
    unconstrained = sum(s.watts(s.target.user_max_replicas) for s in slots) - credited_w
    deferrable_fits = deferrable_budget_w is None or unconstrained <= deferrable_budget_w
    wanted_growth = sum(
        max(0, s.target.user_max_replicas - s.target.current_replicas) for s in slots
    )
    loose = _allocate(
        slots,
        budget_w,
        growth_allowance=allowance,
        idle_credit_w=credit_w,
        idle_pool_w=untargeted_w,
        keep_applied=True,
        deferrable_budget_w=deferrable_budget_w,
    )

    def strict_allocation(withheld_w: float) -> list[int]:
        return _allocate(
            slots,
            strict_w - withheld_w,
            growth_allowance=allowance,
            idle_credit_w=credit_w,
            idle_pool_w=untargeted_w,
            keep_applied=False,
            deferrable_budget_w=(
                None
                if deferrable_budget_w is None
                else deferrable_budget_w - hysteresis_w - withheld_w
            ),
        )

    strict = strict_allocation(0.0)
    strict_shown = strict_allocation(unseen_w) if unseen_w > 0 else strict

    decisions: list[CeilingDecision] = []
    by_name = {
        s.target.name: (s, lo, lo_shown, hi)
        for s, lo, lo_shown, hi in zip(slots, strict, strict_shown, loose, strict=True)
    }
    for target in observation.targets:
        if target.name in held:
            hold = _clamp(target.applied_max_replicas, target)
            code, why = held[target.name]
            decisions.append(_decision(target, hold, code, f"{why}: holding {hold}"))
            continue
        slot, low, low_shown, high = by_name[target.name]
        wpr = slot.watts_per_replica
        # A deferrable target is held to the carbon cap's budget; say which one it was.
        lowered, cap_words, its_budget_w = CeilingReason.OVER_BUDGET, "the cap", budget_w
        if target.deferrable and deferrable_budget_w is not None:
            lowered = CeilingReason.OVER_CARBON_BUDGET
            cap_words, its_budget_w = "the carbon cap for deferrable work", deferrable_budget_w
        if (
            unconstrained <= budget_w - unseen_w
            and (allowance is None or allowance >= wanted_growth)
            and (deferrable_fits or not target.deferrable)
        ):
            code, new = CeilingReason.FITS_UNDER_CAP, target.user_max_replicas
            reason = (
                f"{target.user_max_replicas} replicas x {wpr:.0f} W fit the "
                f"{budget_w:.0f} W left under the cap: user's max"
            )
        else:
            last = _clamp(target.applied_max_replicas, target)
            new = min(high, max(low, last))
            # What the band allows on the watts the measurement shows (none a cut frees later).
            shown = min(new, max(low_shown, last))
            if new == last:
                code = CeilingReason.WITHIN_HYSTERESIS
                reason = f"{last} is within the hysteresis band [{low}, {high}]"
            elif new < last:
                code = lowered
                reason = f"{its_budget_w:.0f} W left under {cap_words} allow {high} x {wpr:.0f} W"
            elif over_usable:
                # Another target's cut may have made the room, but its pods are still leaving
                # and the measurement still holds them: raising now adds watts at once against
                # savings not yet seen, and the next decision takes the raise back.
                reason = (
                    f"holding {last} (room for {new}): the scope measures "
                    f"{observation.measured_w:.0f} W, above the cap less its margin "
                    f"({usable_w:.0f} W); no ceiling rises until it is back under"
                )
                code, new = CeilingReason.OVER_CAP_HOLDING, last
            elif shown == last:
                # The same under the cap: the room is a fall's, still in the measurement.
                reason = (
                    f"holding {last} (room for {new}): {unseen_w:.0f} W that a fall in replicas "
                    "frees are still in the measurement; no ceiling rises on them until it settles"
                )
                code, new = CeilingReason.CUT_ARRIVING, last
            else:
                code, new = CeilingReason.HEADROOM, shown
                its_strict_w = its_budget_w - hysteresis_w - unseen_w
                reason = f"headroom for {new} x {wpr:.0f} W within {its_strict_w:.0f} W"
            if allowance is not None and new > target.current_replicas:
                reason += f"; racks admit {allowance} more replicas"
            # Measured from the running replicas, never above the ceiling in force: replicas
            # still draining after a lower ceiling must not lift it again.
            floor = min(target.current_replicas - settings.max_step_down_replicas, last)
            # Above the cap itself, or predicted above it, a step-down takes every replica the
            # budget no longer holds at once, not `max_step_down_replicas` a decision.
            if new < floor and not breach_ahead:
                reason += f"; stepping down gradually to {floor} (wanted {new})"
                new = floor
        planned_w = slot.watts(_clamp(new, target))
        predicted_now_w = modelled[target.name].watts(target.current_replicas)
        if slot is not modelled[target.name]:
            reason += (
                f"; over the cap its {target.current_replicas} replicas are charged "
                f"{slot.watts(target.current_replicas):.0f} W as measured"
            )
        if target.watts is not None:
            # Beside every decision (status, Events, `climatik explain`): how far the power
            # model is off for this target now.
            reason += (
                f" (power model: {predicted_now_w:.0f} W predicted for its "
                f"{target.current_replicas} replicas, {target.watts:.0f} W measured)"
            )
        decisions.append(
            _decision(
                target,
                new,
                code,
                reason,
                planned_w=planned_w,
                predicted_w=predicted_now_w,
            )
        )
    ceilings = {d.target: d.new_max_replicas for d in decisions}
    predicted_w = _predicted_scope_watts(slots, ceilings, untargeted_w, credit_w)
    error_w = None if state.predicted_w is None else observation.measured_w - state.predicted_w
    return CeilingPlan(
        scope=observation.scope,
        decisions=tuple(decisions),
        state=replace(state, predicted_w=predicted_w),
        predicted_w=predicted_w,
        prediction_error_w=error_w,
        budget_w=budget_w,
        breach_ahead=breach_ahead,
        reason=(
            f"{observation.measured_w:.0f} W of {observation.cap_w:.0f} W measured; "
            f"{budget_w:.0f} W for the targets after a {settings.safety_margin_fraction:.0%} margin"
        ),
    )
