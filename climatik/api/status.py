"""Status of a PowerCappingConfig: condition transitions and the merge patch that writes them.

The controller owns `status` and writes it only through the status subresource, with a JSON
merge patch (RFC 7386, content type `application/merge-patch+json`). Guarantees:

- `set_condition` follows the Kubernetes API conventions: `lastTransitionTime` changes only when
  a condition's `status` changes; reason, message and observedGeneration are always refreshed.
- `status_patch` sends only what changed, deletes (with `null`) what disappeared, and returns
  `None` when nothing changed, so a steady controller does not write at all; `settled` also
  leaves out measurement noise (`settle`), so a noisy reading does not write either.
- Times are UTC with whole seconds, as `metav1.Time` stores them, so a value read back from the
  API server compares equal to the one written.
"""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from climatik.api.status_models import Condition, ConditionStatus, PowerCappingConfigStatus

MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"

GPU_TUNING_CONDITION = "GpuTuning"
"""Set (False) by the power-cap reconciler on a config whose `spec.gpuTuning.mode` asks for
tuning while the controller runs without its GPU-tuning controller, or by the GPU-tuning
reconciler while it asks for tuning in a namespace not allowed to run tuning Jobs; absent
otherwise."""
GPU_TUNING_DISABLED_IN_CONTROLLER = "DisabledInController"
"""The `GpuTuning` condition's reason then: `CLIMATIK_GPU_TUNING__ENABLED=false`."""
GPU_TUNING_NOT_ALLOWED = "TuningNotAllowed"
"""The `GpuTuning` condition's reason (False), set by the GPU-tuning reconciler, while a config
asks for `Recommend` or `Apply` in a namespace `CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES` does
not name (no tuning Job runs for it)."""
GPU_TUNING_APPLY_NOT_ALLOWED_BEFORE = "ApplyNotAllowed"
"""The reason earlier releases set instead (Apply alone was gated); removed or replaced on sight."""


def api_time(moment: datetime) -> datetime:
    """`moment` in UTC truncated to whole seconds (metav1.Time precision); naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def find_condition(conditions: Iterable[Condition] | None, type_: str) -> Condition | None:
    """The condition of `type_`, if present."""
    return next((c for c in conditions or () if c.type == type_), None)


def is_condition_true(conditions: Iterable[Condition] | None, type_: str) -> bool:
    """True only when the condition is present and `True` (absent and Unknown are not true)."""
    found = find_condition(conditions, type_)
    return found is not None and found.status is ConditionStatus.TRUE


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    """One condition a reconciler sets this round, by name rather than by tuple position;
    `set_condition` adds its generation and transition time when it is written."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def set_condition(
    conditions: Iterable[Condition] | None,
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int,
    now: datetime,
) -> tuple[Condition, ...]:
    """Conditions with `type_` set; other conditions and their order are kept.

    The transition time is `now` for a new condition or a changed status, and the previous
    transition time otherwise.
    """
    current = tuple(conditions or ())
    previous = find_condition(current, type_)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == status
        else api_time(now)
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    if previous is None:
        return (*current, updated)
    return tuple(updated if c.type == type_ else c for c in current)


def condition_settled(
    conditions: Iterable[Condition] | None, update: ConditionUpdate, observed_generation: int
) -> bool:
    """True when a settled write of `update` would send nothing: the condition is there with
    the same status, reason and generation, and a message `settle` keeps. A reconciler owning a
    single condition asks this before building and diffing the whole status."""
    found = find_condition(conditions, update.type)
    return (
        found is not None
        and found.status == update.status
        and found.reason == update.reason
        and found.observed_generation == observed_generation
        and _same_message(found.message, update.message)
    )


def status_to_wire(status: PowerCappingConfigStatus | None) -> dict[str, Any]:
    """The JSON form of a status, as the API server stores it (absent fields omitted)."""
    if status is None:
        return {}
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(slots=True)
class _Parsed:
    """One config's status as last read: its version, the JSON it came from, the model, and
    the model's own JSON form (made when a patch is first diffed against it)."""

    version: str
    raw: Mapping[str, Any]
    status: PowerCappingConfigStatus
    wire: dict[str, Any] | None = None


_PARSED: OrderedDict[str, _Parsed] = OrderedDict()
"""By uid: one entry per config, the version it was last read at."""
_BY_STATUS: dict[int, _Parsed] = {}
"""The same entries by `id(status)`, for `_current_wire` (its model lives as long as them)."""
_PARSED_MAX = 8_192


def _current_wire(status: PowerCappingConfigStatus | None) -> dict[str, Any]:
    """`status_to_wire` of a status `status_from_wire` returned is made once per version: the
    status a reconciler compares against is mostly the one it read last time. For reading
    only."""
    if status is None:
        return {}
    kept = _BY_STATUS.get(id(status))
    if kept is None or kept.status is not status:
        return status_to_wire(status)
    if kept.wire is None:
        kept.wire = status_to_wire(status)
    return kept.wire


def status_from_wire(obj: Mapping[str, Any]) -> PowerCappingConfigStatus | None:
    """The status of a whole object dict, or `None` when it has none yet.

    Every reconciler reads the status of every config it reconciles, mostly the same version
    as last time: the parse of the version last seen of each config (by uid, for up to
    `_PARSED_MAX` configs) is used again for an equal status, which comparing two cached dicts
    tells for far less than validating one. A read-only status (the informer cache's) is kept
    as it is, not copied: the cache replaces an object, it never changes one."""
    raw = obj.get("status")
    if not raw:
        return None
    meta = obj.get("metadata") or {}
    uid, version = meta.get("uid"), meta.get("resourceVersion")
    if not (isinstance(uid, str) and isinstance(version, str) and uid and version):
        return PowerCappingConfigStatus.model_validate(raw)
    kept = _PARSED.get(uid)
    if kept is not None and kept.version == version and kept.raw == raw:
        _PARSED.move_to_end(uid)
        return kept.status
    parsed = PowerCappingConfigStatus.model_validate(raw)
    # A mutable status is copied: its holder must not change what is compared later.
    frozen = copy.deepcopy(raw) if isinstance(raw, MutableMapping) else raw
    _forget(_PARSED.pop(uid, None))
    _PARSED[uid] = _BY_STATUS[id(parsed)] = _Parsed(version, frozen, parsed)
    if len(_PARSED) > _PARSED_MAX:
        _forget(_PARSED.popitem(last=False)[1])
    return parsed


def peer_status(obj: Mapping[str, Any]) -> PowerCappingConfigStatus:
    """The status, empty when there is none yet or this version cannot read it: how a
    reconciler reads the fields another reconciler writes (typed, never as raw dicts), where a
    status it cannot read means no readings rather than a failed reconcile."""
    try:
        return status_from_wire(obj) or PowerCappingConfigStatus()
    except ValueError:
        return PowerCappingConfigStatus()


def _forget(entry: _Parsed | None) -> None:
    if entry is not None and _BY_STATUS.get(id(entry.status)) is entry:
        del _BY_STATUS[id(entry.status)]


def merge_patch_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns `old` into `new` (lists are replaced whole)."""
    return settled_diff(old, new, settled=False)


def settled_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], *, settled: bool
) -> dict[str, Any]:
    """`merge_patch_diff(old, settle(old, new))` (or of `new` itself unsettled) in one pass.

    Nearly every reconcile finds its status unchanged, so equal subtrees are skipped with one
    comparison (done in C) rather than walked and rebuilt: settling only where something moved
    is what keeps a round of thousands of configs cheap."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
            continue
        before = old[key]
        if before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = settled_diff(before, value, settled=settled)
            if nested:
                patch[key] = nested
            continue
        after = settle(before, value, key=key) if settled else value
        if after != before:
            patch[key] = after
    return dict(sorted(patch.items()))


SETTLE_RELATIVE = 0.05
"""Measured floats that moved by no more than this fraction keep the value already written."""
SETTLE_ABSOLUTE = 0.5
"""... or by no more than this much (watts, degrees): noise around zero is no change either."""
MEASURED_FIELDS = frozenset(
    {
        "measuredPowerWatts",
        "wattsPerReplica",
        "tokensPerWatt",
        "powerWatts",
        "inletCelsius",
        "headroomWatts",
        "waitingRequests",
        "backlogRequests",
        "doneRequests",
    }
)
"""The status fields that are readings: the only floats that settle (a cap, a setting or a
count never does)."""
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)")


def _same_reading(old: float, new: float) -> bool:
    return abs(new - old) <= max(SETTLE_ABSOLUTE, SETTLE_RELATIVE * abs(old))


def _same_message(old: str, new: str) -> bool:
    """The same words, and every number within the readings' tolerance ("812 W of 1000 W" and
    "836 W of 1000 W"); a count or a name that changed ("llm-1 at 3" and "llm-2 at 5") is news."""
    if old == new:
        return True
    # One split each: words at even positions, numbers at odd ones (the pattern has one group).
    old_parts, new_parts = _NUMBER.split(old), _NUMBER.split(new)
    if len(old_parts) != len(new_parts) or old_parts[::2] != new_parts[::2]:
        return False
    pairs = zip(old_parts[1::2], new_parts[1::2], strict=True)
    return all(_same_reading(float(a), float(b)) for a, b in pairs)


def settle(old: Any, new: Any, *, key: str = "") -> Any:
    """`new` with the changes nobody would act on replaced by what `old` already says.

    A status written on every reconcile because a reading moved by a watt, or a message quoted
    a reading a few percent off, costs the API server a write per config per interval and
    wakes every watcher. Settled: the readings of `MEASURED_FIELDS` within `SETTLE_RELATIVE`
    (or `SETTLE_ABSOLUTE`) of the value written, and `message`s whose words are the same and
    whose numbers are within that tolerance. Anything else (caps, replica counts, statuses,
    reasons, names, what appears or disappears) is never settled. Lists of objects are settled
    element by element when their lengths match.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {k: settle(old[k], v, key=k) if k in old else v for k, v in new.items()}
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [settle(o, n, key=key) for o, n in zip(old, new, strict=True)]
    if (
        key in MEASURED_FIELDS
        and isinstance(old, float)
        and isinstance(new, float)
        and _same_reading(old, new)
    ):
        return old
    if key == "message" and isinstance(old, str) and isinstance(new, str):
        return old if _same_message(old, new) else new
    return new


def status_patch(
    current: PowerCappingConfigStatus | None,
    desired: PowerCappingConfigStatus,
    *,
    resource_version: str | None = None,
    settled: bool = False,
) -> dict[str, Any] | None:
    """The merge-patch body for the status subresource, or `None` when nothing changed.

    With `resource_version` the patch also carries `metadata.resourceVersion`, which turns it
    into a compare-and-swap: the API server answers 409 Conflict if the object moved on. With
    `settled`, changes `settle` deems nobody would act on are not sent.
    """
    diff = settled_diff(_current_wire(current), status_to_wire(desired), settled=settled)
    if not diff:
        return None
    body: dict[str, Any] = {"status": diff}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 applied locally: what the API server will store (used by tests and dry runs)."""
    if not isinstance(patch, Mapping):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
