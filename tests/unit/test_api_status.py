"""Conditions transition like Kubernetes conditions; status patches are minimal merge patches."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from climatik.api import status as status_memo
from climatik.api.status import (
    MERGE_PATCH_CONTENT_TYPE,
    SETTLE_ABSOLUTE,
    SETTLE_RELATIVE,
    ConditionUpdate,
    api_time,
    apply_merge_patch,
    condition_settled,
    find_condition,
    is_condition_true,
    merge_patch_diff,
    set_condition,
    settle,
    settled_diff,
    status_from_wire,
    status_patch,
    status_to_wire,
)
from climatik.api.status_models import (
    Condition,
    ConditionStatus,
    ConditionType,
    Decision,
    EffectiveCapSource,
    PowerCappingConfigStatus,
    RackStatus,
    TargetKindName,
    TargetStatus,
)
from climatik.kube.store import FrozenMapping

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def _set(
    conditions: tuple[Condition, ...] | None,
    type_: str,
    status: ConditionStatus,
    reason: str = "Reason",
    *,
    now: datetime = T0,
    generation: int = 1,
    message: str = "",
) -> tuple[Condition, ...]:
    return set_condition(
        conditions,
        type_=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        now=now,
    )


def test_new_condition_transitions_now() -> None:
    (condition,) = _set(None, ConditionType.READY, ConditionStatus.TRUE, "Reconciled")
    assert condition.last_transition_time == T0
    assert condition.observed_generation == 1


def test_same_status_keeps_transition_time_but_refreshes_the_rest() -> None:
    first = _set(None, ConditionType.CAPPING, ConditionStatus.TRUE, "AtCappingThreshold")
    later = _set(
        first,
        ConditionType.CAPPING,
        ConditionStatus.TRUE,
        "AtHoldingThreshold",
        now=T0 + timedelta(minutes=5),
        generation=2,
        message="96 % of the cap",
    )
    (condition,) = later
    assert condition.last_transition_time == T0
    assert (condition.reason, condition.message, condition.observed_generation) == (
        "AtHoldingThreshold",
        "96 % of the cap",
        2,
    )


def test_changed_status_transitions_at_now() -> None:
    first = _set(None, ConditionType.CAPPING, ConditionStatus.TRUE, "AtCappingThreshold")
    later = _set(
        first,
        ConditionType.CAPPING,
        ConditionStatus.FALSE,
        "BelowThreshold",
        now=T0 + timedelta(hours=1),
    )
    assert later[0].last_transition_time == T0 + timedelta(hours=1)


def test_other_conditions_and_their_order_are_kept() -> None:
    conditions = _set(None, ConditionType.READY, ConditionStatus.TRUE)
    conditions = _set(conditions, ConditionType.METRICS_AVAILABLE, ConditionStatus.TRUE)
    conditions = _set(conditions, ConditionType.CAPPING, ConditionStatus.FALSE)
    updated = _set(
        conditions,
        ConditionType.METRICS_AVAILABLE,
        ConditionStatus.FALSE,
        "QueryEmpty",
        now=T0 + timedelta(1),
    )
    assert [c.type for c in updated] == ["Ready", "MetricsAvailable", "Capping"]
    assert updated[0] == conditions[0]
    assert updated[2] == conditions[2]
    assert not is_condition_true(updated, ConditionType.METRICS_AVAILABLE)
    assert is_condition_true(updated, ConditionType.READY)
    assert not is_condition_true(updated, ConditionType.CARBON_AVAILABLE)
    assert find_condition(updated, "Nope") is None


def test_unknown_is_not_true() -> None:
    conditions = _set(None, ConditionType.READY, ConditionStatus.UNKNOWN)
    assert not is_condition_true(conditions, ConditionType.READY)


def test_api_time_is_utc_whole_seconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert api_time(datetime(2026, 1, 1, 14, 0, 0, 999_999, tzinfo=plus_two)) == datetime(
        2026, 1, 1, 12, 0, 0, tzinfo=UTC
    )
    assert api_time(datetime(2026, 1, 1, 12, 0, 0, 5)) == datetime(2026, 1, 1, 12, tzinfo=UTC)  # noqa: DTZ001


def _status(**changes: Any) -> PowerCappingConfigStatus:
    base = PowerCappingConfigStatus(
        observed_generation=1,
        conditions=list(_set(None, ConditionType.READY, ConditionStatus.TRUE, "Reconciled")),
        measured_power_watts=812.5,
        effective_cap_watts=1000.0,
        effective_cap_source=EffectiveCapSource.STATIC,
        targets=[
            TargetStatus(
                name="llm",
                kind=TargetKindName.SCALED_OBJECT,
                current_replicas=4,
                user_max_replicas=10,
                applied_max_replicas=5,
                watts_per_replica=200.0,
                tokens_per_watt=1.5,
            )
        ],
        racks=[
            RackStatus(
                rack_id="rack-1", power_watts=812.5, inlet_celsius=24.0, headroom_watts=1187.5
            )
        ],
        last_decision=Decision(time=T0, action="Cap", reason="81 % of 1000 W"),
    )
    return base.model_copy(update=changes)


def test_status_wire_form_is_camel_case_and_times_are_rfc3339() -> None:
    wire = status_to_wire(_status())
    assert wire["effectiveCapWatts"] == 1000.0
    assert wire["conditions"][0]["lastTransitionTime"] == "2026-11-29T12:00:00Z"
    assert wire["targets"][0]["appliedMaxReplicas"] == 5
    assert wire["lastDecision"]["time"] == "2026-11-29T12:00:00Z"
    assert status_from_wire({"status": wire}) == _status()
    assert status_from_wire({}) is None


def test_first_status_patch_carries_everything() -> None:
    patch = status_patch(None, _status())
    assert patch == {"status": status_to_wire(_status())}


def test_unchanged_status_needs_no_patch() -> None:
    assert status_patch(_status(), _status()) is None


def test_patch_sends_only_changes_and_nulls_for_removals() -> None:
    patch = status_patch(
        _status(),
        _status(measured_power_watts=None, effective_cap_watts=700.0),
        resource_version="42",
    )
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "status": {"effectiveCapWatts": 700.0, "measuredPowerWatts": None},
    }


def test_patch_replaces_lists_whole() -> None:
    new_conditions = _set(
        tuple(_status().conditions or ()),
        ConditionType.CAPPING,
        ConditionStatus.TRUE,
        "AtCappingThreshold",
    )
    patch = status_patch(_status(), _status(conditions=list(new_conditions)))
    assert patch is not None
    assert [c["type"] for c in patch["status"]["conditions"]] == ["Ready", "Capping"]


def test_merge_patch_content_type() -> None:
    assert MERGE_PATCH_CONTENT_TYPE == "application/merge-patch+json"


_scalars = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.floats(allow_nan=False))
_json = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)
_objects = st.dictionaries(st.text(max_size=3), _json, max_size=4)


@given(old=_objects, new=_objects)
def test_applying_the_diff_turns_old_into_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert apply_merge_patch(old, merge_patch_diff(old, new)) == new


_status_keys = st.sampled_from(["powerWatts", "tokensPerWatt", "message", "ceiling", "targets"])
_readings = st.one_of(
    st.floats(-1e4, 1e4),
    st.integers(-5, 5),
    st.sampled_from(["812 W of 1000 W", "836 W of 1000 W"]),
)
_status_like = st.recursive(
    _readings,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_status_keys, children, max_size=4)
    ),
    max_leaves=16,
)


@given(
    old=st.dictionaries(_status_keys, _status_like, max_size=5),
    new=st.dictionaries(_status_keys, _status_like, max_size=5),
)
def test_one_pass_settled_diff_is_the_diff_of_the_settled_status(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    assert settled_diff(old, new, settled=True) == _walk_diff(old, settle(old, new))
    assert settled_diff(old, new, settled=False) == _walk_diff(old, new)


def _walk_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 diff by a full walk, the way it was computed before the one-pass version."""
    patch: dict[str, Any] = dict.fromkeys(old.keys() - new.keys())
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = _walk_diff(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return dict(sorted(patch.items()))


@given(obj=_objects)
def test_diff_of_equal_objects_is_empty(obj: dict[str, Any]) -> None:
    assert merge_patch_diff(obj, obj) == {}


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(list(ConditionStatus)), st.sampled_from(["A", "B"]), st.integers(1, 600)
        ),
        min_size=1,
        max_size=20,
    )
)
def test_transition_time_moves_exactly_when_status_changes(
    steps: list[tuple[ConditionStatus, str, int]],
) -> None:
    conditions: tuple[Condition, ...] = ()
    now = T0
    expected_transition = T0
    previous_status: ConditionStatus | None = None
    for status, reason, advance_s in steps:
        now += timedelta(seconds=advance_s)
        if status != previous_status:
            expected_transition = now
        conditions = _set(conditions, ConditionType.CAPPING, status, reason, now=now)
        (condition,) = conditions
        assert condition.last_transition_time == expected_transition
        assert (condition.status, condition.reason) == (status, reason)
        previous_status = status


def _noisy(status: PowerCappingConfigStatus, factor: float, note: str) -> PowerCappingConfigStatus:
    """`status` as the next reconcile sees it: every measured float scaled by `factor`, and the
    Ready message quoting a new number."""
    (target,) = status.targets or []
    (rack,) = status.racks or []
    conditions = _set(
        tuple(status.conditions or ()),
        ConditionType.READY,
        ConditionStatus.TRUE,
        "Reconciled",
        message=note,
    )
    return status.model_copy(
        update={
            "conditions": list(conditions),
            "measured_power_watts": (status.measured_power_watts or 0) * factor,
            "targets": [
                target.model_copy(
                    update={
                        "watts_per_replica": (target.watts_per_replica or 0) * factor,
                        "tokens_per_watt": (target.tokens_per_watt or 0) * factor,
                    }
                )
            ],
            "racks": [rack.model_copy(update={"power_watts": (rack.power_watts or 0) * factor})],
        }
    )


def test_settled_patch_leaves_out_measurement_noise() -> None:
    """A status that changes on every reconcile only by noise is not written (issue 15, 9)."""
    written = _noisy(_status(), 1.0, "812 W of 1000 W")
    for factor, note in ((1.03, "836 W of 1000 W"), (0.96, "780 W of 1000 W")):
        again = _noisy(_status(), factor, note)
        assert status_patch(written, again) is not None  # unsettled: every float is news
        assert status_patch(written, again, settled=True) is None


def test_settled_patch_still_sends_what_a_user_acts_on() -> None:
    written = _noisy(_status(), 1.0, "812 W of 1000 W")
    moved = status_patch(written, _noisy(_status(), 1.2, "975 W of 1000 W"), settled=True)
    assert moved is not None
    assert moved["status"]["measuredPowerWatts"] == 812.5 * 1.2
    reworded = status_patch(written, _noisy(_status(), 1.0, "no data for 30 s"), settled=True)
    assert reworded is not None
    (target,) = _status().targets or []
    fewer = _status(targets=[target.model_copy(update={"applied_max_replicas": 4})])
    patch = status_patch(_status(), fewer, settled=True)
    assert patch is not None
    assert patch["status"]["targets"][0]["appliedMaxReplicas"] == 4
    gone = status_patch(_status(), _status(measured_power_watts=None), settled=True)
    assert gone == {"status": {"measuredPowerWatts": None}}


@given(
    old=st.floats(min_value=0, max_value=1e6),
    new=st.floats(min_value=0, max_value=1e6),
)
def test_settled_value_is_never_further_than_the_tolerance(old: float, new: float) -> None:
    field = "measuredPowerWatts"
    settled = settle({field: old}, {field: new})[field]
    assert settled in (old, new)
    assert abs(settled - new) <= max(SETTLE_ABSOLUTE, SETTLE_RELATIVE * old)


_MESSAGE_PARTS = st.lists(
    st.one_of(
        st.sampled_from(["W of ", " W", "llm-", " at ", "% ", "-", ".", " "]),
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False).map(lambda v: f"{v:.2f}"),
        st.integers(min_value=0, max_value=5000).map(str),
    ),
    max_size=8,
).map("".join)


def _same_message_as_first_written(old: str, new: str) -> bool:
    """The rule as first written (four regex passes), kept to pin the faster one to it."""
    number = re.compile(r"-?\d+(?:\.\d+)?")
    if number.sub("#", old) != number.sub("#", new):
        return False
    pairs = zip(number.findall(old), number.findall(new), strict=True)
    return all(
        abs(float(b) - float(a)) <= max(SETTLE_ABSOLUTE, SETTLE_RELATIVE * abs(float(a)))
        for a, b in pairs
    )


@given(old=_MESSAGE_PARTS, new=_MESSAGE_PARTS)
def test_messages_settle_as_the_rule_was_first_written(old: str, new: str) -> None:
    settled = settle({"message": old}, {"message": new})["message"]
    assert settled == (old if _same_message_as_first_written(old, new) else new)


def test_settled_patch_never_hides_a_count_a_name_or_a_cap() -> None:
    """A reviewer's finding: masking every digit hid "llm-1 at 3" becoming "llm-2 at 5", and a
    5 % tolerance on every float hid a new cap of 1040 W after 1000 W."""
    written = _noisy(_status(), 1.0, "llm-1 at 3")
    moved = status_patch(written, _noisy(_status(), 1.0, "llm-2 at 5"), settled=True)
    assert moved is not None
    assert moved["status"]["conditions"][0]["message"] == "llm-2 at 5"
    recapped = status_patch(_status(), _status(effective_cap_watts=1040.0), settled=True)
    assert recapped == {"status": {"effectiveCapWatts": 1040.0}}


def test_a_status_parse_is_reused_only_for_the_same_object_version_and_content() -> None:
    wire = status_to_wire(_status())
    obj = {"metadata": {"uid": "u-9", "resourceVersion": "7"}, "status": wire}
    first = status_from_wire(obj)
    assert status_from_wire({**obj, "status": dict(wire)}) is first
    moved = {"metadata": {"uid": "u-9", "resourceVersion": "8"}, "status": wire}
    assert status_from_wire(moved) == first
    assert status_from_wire(moved) is not first
    # Same uid and version, other content (only fakes do that): parsed afresh, never stale.
    other = {**obj, "status": {**wire, "measuredPowerWatts": 1.0}}
    parsed = status_from_wire(other)
    assert parsed is not None
    assert parsed.measured_power_watts == 1.0


def test_the_memo_keeps_one_version_per_config_and_does_not_copy_the_cache() -> None:
    wire = status_to_wire(_status())
    cached = FrozenMapping({"metadata": {"uid": "u-10", "resourceVersion": "1"}, "status": wire})
    first = status_from_wire(cached)
    entry = status_memo._PARSED["u-10"]
    assert entry.raw == wire
    assert not isinstance(entry.raw, dict)  # the cache's own (read-only) status, not a copy
    newer = {
        "metadata": {"uid": "u-10", "resourceVersion": "2"},
        "status": {**wire, "measuredPowerWatts": 900.0},
    }
    second = status_from_wire(FrozenMapping(newer))
    assert second is not None
    assert status_memo._PARSED["u-10"].status is second
    assert id(first) not in status_memo._BY_STATUS  # the older version is gone with its entry
    # A patch diffed against the status read last reuses its JSON form.
    assert status_patch(second, second) is None
    kept = status_memo._PARSED["u-10"].wire
    assert kept is not None
    assert status_patch(second, second) is None
    assert status_memo._PARSED["u-10"].wire is kept


_CONDITION_STATUSES = st.sampled_from(list(ConditionStatus))
_REASONS = st.sampled_from(["RacksWithinLimits", "RackOverLimit"])


@given(
    written=st.tuples(_CONDITION_STATUSES, _REASONS, _MESSAGE_PARTS, st.integers(1, 3)),
    update=st.tuples(_CONDITION_STATUSES, _REASONS, _MESSAGE_PARTS, st.integers(1, 3)),
    later=st.integers(min_value=0, max_value=3600),
)
def test_a_settled_condition_is_exactly_one_a_settled_write_would_not_send(
    written: tuple[ConditionStatus, str, str, int],
    update: tuple[ConditionStatus, str, str, int],
    later: int,
) -> None:
    """`condition_settled` lets a reconciler skip building the status; it must say so exactly
    when the settled patch of the whole status would be empty."""
    kind = str(ConditionType.RACKS_WITHIN_LIMITS)
    ready = _set(None, ConditionType.READY, ConditionStatus.TRUE, "Reconciled")
    status, reason, message, generation = written
    current = PowerCappingConfigStatus(
        conditions=list(_set(ready, kind, status, reason, message=message, generation=generation))
    )
    status, reason, message, generation = update
    desired = current.model_copy(
        update={
            "conditions": list(
                _set(
                    tuple(current.conditions or ()),
                    kind,
                    status,
                    reason,
                    message=message,
                    generation=generation,
                    now=T0 + timedelta(seconds=later),
                )
            )
        }
    )
    settled = condition_settled(
        current.conditions, ConditionUpdate(kind, status, reason, message), generation
    )
    assert settled == (status_patch(current, desired, settled=True) is None)
