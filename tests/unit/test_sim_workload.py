"""Generated traffic and carbon have the shapes SIMULATOR.md asks for, and are reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from climatik.sim.scenario import GeneratedCarbon, Traffic
from climatik.sim.workload import arrival_rates, carbon_slots


def test_generated_carbon_is_gb_2020_like() -> None:
    year = carbon_slots(GeneratedCarbon(), None, 1800.0, 24 * 365)
    days = year[: year.size // 48 * 48].reshape(-1, 48)
    daily_swing = ((days.max(axis=1) - days.min(axis=1)) / days.mean(axis=1)).mean()
    assert 195 <= year.mean() <= 235
    assert year.min() >= 64
    assert year.max() <= 395
    assert 0.5 <= daily_swing <= 0.7


def test_carbon_file_is_interpolated_and_repeated(tmp_path: Path) -> None:
    (tmp_path / "grid.csv").write_text("hour,g\n0,100\n1,300\n2,100\n", encoding="utf-8")
    slots = carbon_slots(GeneratedCarbon(), "grid.csv", 1800.0, 4.0, str(tmp_path))
    assert slots[:5].tolist() == [100.0, 200.0, 300.0, 200.0, 100.0]
    assert slots[4:9].tolist() == slots[:5].tolist()


def test_traffic_peaks_at_its_peak_hour_and_dips_at_weekends() -> None:
    hours = np.arange(0, 24 * 7, 1 / 60)
    traffic = Traffic(peak_rps=10, peak_hour=14, bursts_per_day=0, noise_fraction=0.0)
    rates = arrival_rates(traffic, hours, 60.0)
    monday = rates[: 24 * 60]
    assert abs(float(hours[int(np.argmax(monday))]) - 14) < 0.1
    assert monday.max() == 10.0
    assert monday.min() >= 0.3 * 10 - 1e-9
    saturday = rates[5 * 24 * 60 : 6 * 24 * 60]
    assert saturday.max() == 10.0 * traffic.weekend_fraction


def test_same_seed_same_traffic_and_bursts_raise_it() -> None:
    hours = np.arange(0, 48, 10 / 3600)
    bursty = Traffic(bursts_per_day=6, burst_multiplier=2.0, seed=3)
    calm = Traffic(bursts_per_day=0, seed=3)
    first = arrival_rates(bursty, hours, 10.0)
    assert np.array_equal(first, arrival_rates(bursty, hours, 10.0))
    assert first.max() > arrival_rates(calm, hours, 10.0).max() * 1.2
