"""Kubernetes Events (core/v1) that users see in ``kubectl describe``, with repeats aggregated.

A reconciler that fails the same way every 15 s must not flood etcd with one Event per attempt,
and 5,000 configs failing at once (their Prometheus is down) must not cost the API server a
write per reconcile. Like client-go's EventCorrelator, the recorder:

- remembers recent events by (object, type, reason, message): a repeat within
  ``aggregation_window_s`` is counted, and written to the existing Event (``count`` and
  ``lastTimestamp``, one merge patch) at most once per ``repeat_write_interval_s``;
- lets each (object, type, reason) create at most ``burst`` Events with different messages at
  once, then one more per ``refill_s`` (client-go's spam filter): a message that changes every
  time cannot get around the aggregation.

It remembers ``max_remembered`` events, enough for every object of a large cluster to have a
few. Recording is best effort: it never raises into the reconciler (a failed event is logged),
and it goes through the client's write gate like every other write, so a replica that is not
the leader records nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from climatik.kube.client import ApiError, KubeClient, NotLeaderError
from climatik.kube.resources import EVENTS

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


@dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int
    """Occurrences so far; written to the Event at most once per repeat interval."""
    last_at: float
    written_at: float


@dataclass(slots=True)
class _Tokens:
    """A token bucket of new Events for one (object, type, reason)."""

    left: float
    at: float


def _digest(*parts: str) -> bytes:
    # Messages run to a kilobyte; thousands of remembered events keep 16 bytes each instead.
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).digest()


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Record Events about objects on behalf of one component."""

    def __init__(
        self,
        client: KubeClient,
        component: str = "climatik",
        *,
        host: str = "",
        aggregation_window_s: float = 600.0,
        repeat_write_interval_s: float = 300.0,
        burst: int = 5,
        refill_s: float = 300.0,
        max_remembered: int = 32768,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.aggregation_window_s = aggregation_window_s
        self.repeat_write_interval_s = repeat_write_interval_s
        self.burst = burst
        self.refill_s = refill_s
        self.max_remembered = max_remembered
        self._clock = clock
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()
        self._tokens: OrderedDict[bytes, _Tokens] = OrderedDict()

    async def record(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> bool:
        """Record (or aggregate) one event about ``obj``; return whether it is recorded (a
        repeat counted for the next write of its Event is; one the spam filter drops is not)."""
        metadata = obj["metadata"]
        namespace = metadata.get("namespace") or "default"
        similar = _digest(
            str(metadata.get("uid") or ""),
            str(obj.get("kind", "")),
            namespace,
            str(metadata["name"]),
            event_type,
            reason,
        )
        identity = _digest(similar.hex(), message)
        now = self._clock()
        try:
            seen = self._seen.get(identity)
            if seen is not None and now - seen.last_at < self.aggregation_window_s:
                seen.count += 1
                seen.last_at = now
                self._seen.move_to_end(identity)
                if now - seen.written_at < self.repeat_write_interval_s:
                    return True
                try:
                    await self.client.merge_patch(
                        EVENTS,
                        seen.name,
                        {"count": seen.count, "lastTimestamp": _now_rfc3339()},
                        seen.namespace,
                    )
                except ApiError as error:
                    if not error.is_not_found:
                        raise
                else:
                    seen.written_at = now
                    return True
            if not self._take_token(similar, now):
                log.debug("event_dropped_as_spam", reason=reason)
                return False
            name = await self._create(obj, namespace, event_type, reason, message)
        except (ApiError, NotLeaderError, TimeoutError, OSError) as error:
            log.warning("event_record_failed", reason=reason, error=str(error))
            return False
        self._seen[identity] = _Seen(name, namespace, 1, now, now)
        self._seen.move_to_end(identity)
        while len(self._seen) > self.max_remembered:
            self._seen.popitem(last=False)
        return True

    def _take_token(self, similar: bytes, now: float) -> bool:
        """One new Event for (object, type, reason), if its bucket has a token left."""
        bucket = self._tokens.get(similar)
        if bucket is None:
            bucket = self._tokens[similar] = _Tokens(float(self.burst), now)
            while len(self._tokens) > self.max_remembered:
                self._tokens.popitem(last=False)
        elif self.refill_s > 0:
            bucket.left = min(float(self.burst), bucket.left + (now - bucket.at) / self.refill_s)
            bucket.at = now
        self._tokens.move_to_end(similar)
        if bucket.left < 1:
            return False
        bucket.left -= 1
        return True

    async def _create(
        self, obj: Mapping[str, Any], namespace: str, event_type: str, reason: str, message: str
    ) -> str:
        metadata = obj["metadata"]
        timestamp = _now_rfc3339()
        body = {
            "apiVersion": EVENTS.api_version,
            "kind": EVENTS.kind,
            "metadata": {
                "name": f"{metadata['name']}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": metadata["name"],
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host or self.component,
        }
        created = await self.client.create(EVENTS, body, namespace)
        return str(created["metadata"]["name"])
