"""Arrival-rate and grid-carbon series for the twin, generated from a seed or read from CSV.

Traffic has the shape of the public Azure LLM inference traces: a diurnal cycle, a weekend dip,
bursts and short-term noise. Carbon has the shape of the GB 2020 series: mean about 215 g/kWh,
range 64 to 395, a daily swing of about 60 % of the mean, and multi-day weather drift. The same
seed always gives the same series, so every policy in a run sees exactly the same world.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt

from climatik.sim.scenario import GeneratedCarbon, ScenarioError, Traffic

FloatArray = npt.NDArray[np.float64]

_DAY_H = 24.0
_WEEK_H = 7 * _DAY_H


def _read_two_column_csv(path: Path, what: str) -> tuple[FloatArray, FloatArray]:
    if not path.is_file():
        msg = f"{what} file {path} does not exist"
        raise ScenarioError(msg)
    hours: list[float] = []
    values: list[float] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            try:
                hours.append(float(row[0]))
                values.append(float(row[1]))
            except (ValueError, IndexError):
                if line_no == 1:  # a header line
                    continue
                msg = f"{what} file {path}, line {line_no}: expected `hour,value`, got {row}"
                raise ScenarioError(msg) from None
    if len(hours) < 2 or any(b <= a for a, b in itertools.pairwise(hours)):
        msg = f"{what} file {path}: need at least two rows with increasing hours"
        raise ScenarioError(msg)
    return np.asarray(hours), np.asarray(values)


def _resolve(name: str, source_dir: str | None) -> Path:
    path = Path(name)
    if not path.is_absolute() and source_dir is not None:
        path = Path(source_dir) / path
    return path


def _smooth_noise(
    rng: np.random.Generator, steps: int, sigma: float, correlation_steps: float
) -> FloatArray:
    """Zero-mean AR(1) noise with the given stationary standard deviation."""
    if sigma <= 0 or steps == 0:
        return np.zeros(steps)
    keep = float(np.exp(-1.0 / max(correlation_steps, 1.0)))
    shocks = rng.normal(0.0, sigma * np.sqrt(1 - keep**2), steps)
    out = np.empty(steps)
    level = rng.normal(0.0, sigma)
    for index in range(steps):  # a few thousand steps: cheap, and exact AR(1)
        level = keep * level + shocks[index]
        out[index] = level
    return out


def arrival_rates(
    traffic: Traffic, hours: FloatArray, step_s: float, source_dir: str | None = None
) -> FloatArray:
    """Requests per second at each step time (hours since Monday 00:00)."""
    if traffic.trace_file is not None:
        trace_h, trace_rps = _read_two_column_csv(
            _resolve(traffic.trace_file, source_dir), "traffic trace"
        )
        span = trace_h[-1] - trace_h[0]
        wrapped = trace_h[0] + np.mod(hours - trace_h[0], span) if span > 0 else hours
        return np.asarray(np.maximum(0.0, np.interp(wrapped, trace_h, trace_rps)), dtype=np.float64)
    rng = np.random.default_rng(traffic.seed)
    phase = 2 * np.pi * (hours - traffic.peak_hour) / _DAY_H
    # Raised cosine sharpened a little: LLM traffic has a broad day and a narrow night.
    daily = (0.5 * (1 + np.cos(phase))) ** 1.3
    shape = traffic.trough_fraction + (1 - traffic.trough_fraction) * daily
    weekday = np.floor(np.mod(hours, _WEEK_H) / _DAY_H)
    shape = np.where(weekday >= 5, shape * traffic.weekend_fraction, shape)
    total_h = float(hours[-1] - hours[0]) + step_s / 3600.0 if hours.size else 0.0
    bursts = rng.poisson(traffic.bursts_per_day * total_h / _DAY_H)
    for _ in range(int(bursts)):
        start = hours[0] + rng.uniform(0.0, total_h)
        length_h = traffic.burst_duration_s / 3600.0 * rng.uniform(0.5, 1.5)
        height = 1 + (traffic.burst_multiplier - 1) * rng.uniform(0.5, 1.0)
        inside = (hours >= start) & (hours < start + length_h)
        shape = np.where(inside, shape * height, shape)
    noise = _smooth_noise(rng, hours.size, traffic.noise_fraction, 300.0 / step_s)
    return np.asarray(np.maximum(0.0, traffic.peak_rps * shape * (1 + noise)), dtype=np.float64)


def carbon_slots(
    generated: GeneratedCarbon,
    file: str | None,
    slot_s: float,
    hours_total: float,
    source_dir: str | None = None,
) -> FloatArray:
    """Carbon intensity per slot (g/kWh), enough slots to cover `hours_total`."""
    slots = int(np.ceil(hours_total * 3600.0 / slot_s)) + 1
    slot_hours = np.arange(slots) * slot_s / 3600.0
    if file is not None:
        file_h, file_g = _read_two_column_csv(_resolve(file, source_dir), "carbon")
        span = file_h[-1] - file_h[0]
        wrapped = file_h[0] + np.mod(slot_hours - file_h[0], span) if span > 0 else slot_hours
        return np.asarray(np.maximum(0.0, np.interp(wrapped, file_h, file_g)), dtype=np.float64)
    rng = np.random.default_rng(generated.seed)
    mean = generated.mean_g_per_kwh
    daily = (
        -0.5
        * generated.daily_swing_fraction
        * np.cos(2 * np.pi * (slot_hours - generated.trough_hour) / _DAY_H)
    )
    # Weather (wind) drifts over about two days.
    weather = _smooth_noise(rng, slots, generated.weather_fraction, 48.0 * 3600.0 / slot_s)
    series = mean * (1 + daily + weather)
    return np.asarray(
        np.clip(series, generated.min_g_per_kwh, generated.max_g_per_kwh), dtype=np.float64
    )
