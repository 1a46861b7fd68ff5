"""The garbage collector, tuned for a process whose heap is mostly long-lived caches.

CPython's cyclic collector runs a young collection every `threshold0` net allocations of
container objects and, when enough objects have been promoted, a full collection that walks
every tracked object. The controller's informer caches hold millions of them at 5,000 configs
(parsed JSON: no cycles, freed by reference counting when the cache replaces an object), so
every full collection stops the event loop for as long as the walk takes: on the 5,000-config
bench, pauses of up to 1.3 s and 8.9 s a minute, which is what pushed configs past their 15 s
interval although the process was busy a third of the time.

Two standard remedies (the `gc.freeze` documentation describes the first):

- once the caches have listed, one collection and `gc.freeze()`: what is live then moves to the
  permanent generation and is not walked again (still freed by reference counting);
- a larger young threshold, so the objects of reconciles in flight (alive across an await)
  die young instead of being promoted to the generation that full collections walk.

Cyclic garbage among frozen objects is not collected; the frozen objects are the caches'
acyclic JSON and the wiring of the process, which live as long as it does.
"""

from __future__ import annotations

import gc
import time

import structlog
from pydantic import BaseModel, Field

log = structlog.get_logger(__name__)


class HeapSettings(BaseModel):
    young_threshold: int = Field(default=50_000, ge=0)
    """Net container allocations between young collections (Python's default is 700; 0 keeps
    the interpreter's thresholds as they are)."""
    freeze_after_sync: bool = True
    """Collect once and freeze what is live when every cache has listed."""


def tune_collector(settings: HeapSettings) -> None:
    """Set the young threshold (the older generations' thresholds are Python's)."""
    if settings.young_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(settings.young_threshold, older, oldest)


def freeze_live_objects() -> None:
    """Collect, then move every live object out of the collector's reach (see module doc)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "heap_frozen",
        frozen_objects=gc.get_freeze_count(),
        seconds=round(time.perf_counter() - started, 3),
    )
