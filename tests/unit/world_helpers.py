"""Reading the world's exposition text back in unit tests."""

from __future__ import annotations

import random
import re

from climatik.world.exposition import render
from climatik.world.readings import Readings
from tests.unit.fakeclock import FakeClock

WALL_S = 1_767_000_000.0


def samples(text: str, metric: str) -> list[tuple[dict[str, str], float, str | None]]:
    """Every sample of `metric`: its labels, value and timestamp (None without one)."""
    found = []
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        labels, _, rest = line.partition("} ")
        parts = rest.split()
        found.append(
            (
                dict(re.findall(r'(\w+)="([^"]*)"', labels)),
                float(parts[0]),
                parts[1] if len(parts) > 1 else None,
            )
        )
    return found


def value_of(text: str, metric: str, **labels: str) -> float:
    matching = [
        value
        for rendered, value, _ in samples(text, metric)
        if all(rendered.get(k) == v for k, v in labels.items())
    ]
    assert len(matching) == 1, f"{metric} {labels}: {len(matching)} samples"
    return matching[0]


def make_readings(clock: FakeClock) -> Readings:
    readings = Readings(clock=clock, wall_clock=lambda: WALL_S)
    readings.upsert(
        {
            "namespace": "llm",
            "name": "vllm-0",
            "node": "n1",
            "cpu_watts": 100,
            "gpu_watts": 300,
            "tokens_per_s": 40,
        }
    )
    return readings


def scrape(readings: Readings, family: str = "all", seed: int = 1) -> str:
    return render(readings, family, random.Random(seed))
