"""Kubernetes Events (core/v1) that users see in ``kubectl describe``, with repeats aggregated.

A reconciler that fails the same way every 30 s must not flood etcd with one Event per attempt.
Like client-go's EventCorrelator, the recorder remembers recent events by (object, type, reason,
message); a repeat within ``aggregation_window_s`` bumps ``count`` and ``lastTimestamp`` of the
existing Event with a merge patch instead of creating a new one. Recording is best effort: it never
raises into the reconciler (a failed event is logged), and it goes through the client's write gate
like every other write, so a replica that is not the leader records nothing.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from climatik.kube.client import EVENTS, ApiError, KubeClient, NotLeaderError

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    last_at: float


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
        max_remembered: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.aggregation_window_s = aggregation_window_s
        self.max_remembered = max_remembered
        self._clock = clock
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()

    async def record(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> bool:
        """Record (or aggregate) one event about ``obj``; return whether the API accepted it."""
        metadata = obj["metadata"]
        namespace = metadata.get("namespace") or "default"
        identity = (
            str(metadata.get("uid") or ""),
            str(obj.get("kind", "")),
            namespace,
            str(metadata["name"]),
            event_type,
            reason,
            message,
        )
        now = self._clock()
        try:
            seen = self._seen.get(identity)
            if seen is not None and now - seen.last_at < self.aggregation_window_s:
                try:
                    await self.client.merge_patch(
                        EVENTS,
                        seen.name,
                        {"count": seen.count + 1, "lastTimestamp": _now_rfc3339()},
                        seen.namespace,
                    )
                except ApiError as error:
                    if not error.is_not_found:
                        raise
                else:
                    seen.count += 1
                    seen.last_at = now
                    self._seen.move_to_end(identity)
                    return True
            name = await self._create(obj, namespace, event_type, reason, message)
        except (ApiError, NotLeaderError, TimeoutError, OSError) as error:
            log.warning("event_record_failed", reason=reason, error=str(error))
            return False
        self._seen[identity] = _Seen(name, namespace, 1, now)
        self._seen.move_to_end(identity)
        while len(self._seen) > self.max_remembered:
            self._seen.popitem(last=False)
        return True

    async def _create(
        self, obj: Mapping[str, Any], namespace: str, event_type: str, reason: str, message: str
    ) -> str:
        metadata = obj["metadata"]
        timestamp = _now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
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
