"""`climatik demo --step`: a scenario whose demand steps between a low and a high level, with
the site cap set so the high level would draw `OVER` above it uncapped.

The scenario is the given one with each service's arrivals replaced by a square-wave trace
(`trace_file`, written beside the scenario in the demo's directory, so the world process and
the twin load the same file) and the cap found by running the twin uncapped on it. Low is the
service's trough, high its peak times `HIGH_OVER_PEAK`; the first step up comes after one low
phase, so the loop starts settled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import yaml

from climatik.sim.engine import Twin
from climatik.sim.scenario import Scenario, load_scenario

OVER: Final = 0.30
"""How far above the cap the high level's uncapped power goes."""
HIGH_OVER_PEAK: Final = 1.5
EDGE_H: Final = 1e-4
"""A step's width in the trace (hours): a step, to the twin's 10 s resolution."""


def step_times_h(start_hour: float, phase_h: float, until_h: float) -> list[float]:
    """The hours at which demand steps up: one low phase after the start, then every two."""
    times = []
    t = start_hour + phase_h
    while t < until_h:
        times.append(t)
        t += 2 * phase_h
    return times


def square_wave(
    low: float, high: float, start_hour: float, phase_h: float, duration_h: float
) -> list[tuple[float, float]]:
    """(hour, requests/s) points: low until the first step, then high and low by turns."""
    points = [(0.0, low)]
    level, t = low, start_hour + phase_h
    while t < duration_h - 2 * EDGE_H:
        new = high if level == low else low
        points += [(t - EDGE_H, level), (t, new)]
        level, t = new, t + phase_h
    points.append((duration_h, level))
    return points


def write_step_scenario(
    base: Scenario,
    base_yaml: str,
    directory: Path,
    *,
    start_hour: float,
    phase_h: float,
) -> tuple[Path, list[float]]:
    """Write the step scenario into `directory`; return its path and the step-up hours."""
    directory.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(base_yaml)
    data["name"] = f"{base.name}-step"
    data["description"] = f"{base.name} with demand stepping every {phase_h * 60:g} min"
    for entry, service in zip(data["services"], base.services, strict=True):
        traffic = service.traffic
        low = traffic.peak_rps * traffic.trough_fraction
        high = traffic.peak_rps * HIGH_OVER_PEAK
        trace = directory / f"{service.name}-trace.csv"
        wave = square_wave(low, high, start_hour, phase_h, base.duration_h)
        trace.write_text("".join(f"{h:.6f},{rps:.4f}\n" for h, rps in wave), encoding="utf-8")
        entry["traffic"] = {"trace_file": trace.name}
    path = directory / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    # Uncapped, how high does the high level draw? The cap goes OVER below that.
    uncapped = Twin(
        load_scenario(str(path)), policies=["uncapped"], hours=2 * phase_h, start_hour=start_hour
    ).run()
    peak_w = float(uncapped.site_w_per_step[:, 0].max())
    data.setdefault("caps", {})["site_cap_w"] = round(peak_w / (1 + OVER))
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path, step_times_h(start_hour, phase_h, base.duration_h)


def wall_times(
    steps_h: Sequence[float], start_hour: float, samples: Sequence[tuple[float, float]]
) -> list[float]:
    """Each step's wall time: the first (wall, simulated seconds) sample at or past it."""
    found = []
    for hour in steps_h:
        at = (hour - start_hour) * 3600.0
        wall = next((w for w, simulated in samples if simulated >= at), None)
        if wall is not None:
            found.append(wall)
    return found
