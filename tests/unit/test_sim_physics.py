"""The twin's physics against cases computed by hand (SIMULATOR.md's formulas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from climatik.sim import physics
from climatik.sim.engine import Twin
from climatik.sim.scenario import GPU_MODELS, MODEL_CLASSES, parse_scenario

H100 = GPU_MODELS["H100"]
LLAMA_70B = MODEL_CLASSES["llama-70b-tp8"]


def test_cop_at_20_c_is_the_published_polynomial() -> None:
    assert float(physics.cop(20.0)) == pytest.approx(0.0068 * 400 + 0.0008 * 20 + 0.458)
    assert float(physics.cop(20.0)) == pytest.approx(3.194)


def test_fully_busy_dgx_h100_draws_about_10_2_kw() -> None:
    gpu_w = physics.gpu_power_w(1.0, 1.0, 0.0, H100)
    assert float(gpu_w) == pytest.approx(700.0)
    # 2200 + 0.48 * 8 * (700 - 75) + 8 * 700
    assert float(physics.server_power_w(gpu_w, 8, 75.0, 2200.0, 0.48)) == pytest.approx(10200.0)


def test_gpu_power_follows_the_clock_power_law() -> None:
    # Decode at 60 % clock: 75 + (380 - 75) * 0.6 ** 1.6
    expected = 75 + 305 * 0.6**1.6
    assert float(physics.gpu_power_w(0.6, 0.0, 1.0, H100)) == pytest.approx(expected)


def test_decode_is_memory_bound_and_prefill_scales_with_one_over_f() -> None:
    at_max = float(physics.decode_step_s(LLAMA_70B, 1.0, 1.0))
    assert at_max == pytest.approx(0.050)
    assert float(physics.decode_step_s(LLAMA_70B, 1.0, 0.5)) == pytest.approx(0.050 * 1.2)
    assert float(physics.decode_step_s(LLAMA_70B, 0.0, 1.0)) == pytest.approx(0.030)
    pre_max = float(physics.prefill_s(LLAMA_70B, 2048, 1.0))
    assert pre_max == pytest.approx(0.047 + 0.0455 * 2.048)
    assert float(physics.prefill_s(LLAMA_70B, 2048, 0.5)) == pytest.approx(2 * pre_max)


def test_inlet_rise_of_a_two_node_room_matches_the_mixing_equations() -> None:
    # Node 0 sends 20 % of its exhaust to node 1's inlet, node 1 sends 10 % to node 0's.
    # K = (600, 400) W/K, P = (6000, 3000) W. By hand, with r the rise above supply air:
    #   600 r0 = 0.1 * 400 * (r1 + 3000/400)  ->  600 r0 = 40 r1 + 300
    #   400 r1 = 0.2 * 600 * (r0 + 6000/600)  ->  400 r1 = 120 r0 + 1200
    # so r1 = 1260/392 = 45/14 °C and r0 = 5/7 °C.
    recirculation = np.array([[0.0, 0.2], [0.1, 0.0]])
    d_matrix = physics.heat_matrix(recirculation, np.array([600.0, 400.0]))
    rise = d_matrix @ np.array([6000.0, 3000.0])
    assert rise == pytest.approx([5 / 7, 45 / 14])


def test_without_recirculation_inlets_stay_at_supply_temperature() -> None:
    d_matrix = physics.heat_matrix(np.zeros((3, 3)), np.array([600.0, 600.0, 600.0]))
    assert np.allclose(d_matrix, 0.0)


def test_tokens_per_joule_peak_below_the_maximum_clock() -> None:
    ratios = np.linspace(0.3, 1.0, 71)
    pre, dec = physics.request_busy_s(LLAMA_70B, 1024, 256, ratios)
    busy = pre + dec
    tokens_per_s = 256 / busy
    gpu_w = physics.gpu_power_w(ratios, pre / busy, dec / busy, H100)
    server_w = physics.server_power_w(gpu_w, 8, 75.0, 2200.0, 0.48)
    per_joule = tokens_per_s / server_w
    best = float(ratios[int(np.argmax(per_joule))])
    assert 0.3 < best < 1.0
    assert per_joule.max() > 1.1 * per_joule[-1]


def test_carbon_of_a_constant_load() -> None:
    # 10 kW for one hour at 200 g/kWh is 10 kWh * 200 g = 2 kg.
    assert float(physics.carbon_g(200.0, 10_000.0, 3600.0)) == pytest.approx(2000.0)


def test_twin_carbon_equals_intensity_times_facility_energy(tmp_path: Path) -> None:
    (tmp_path / "flat.csv").write_text("hour,intensity\n0,180\n100,180\n", encoding="utf-8")
    scenario = parse_scenario(
        {
            "name": "flat-carbon",
            "duration_h": 1,
            "racks": {"count": 1, "servers_per_rack": 2},
            "caps": {"site_cap_w": 20000},
            "carbon": {"file": "flat.csv"},
            "services": [
                {
                    "name": "chat",
                    "min_replicas": 1,
                    "max_replicas": 2,
                    "traffic": {"peak_rps": 1, "bursts_per_day": 0},
                },
            ],
        },
        source_dir=str(tmp_path),
    )
    result = Twin(scenario, ["uncapped"]).run()
    facility_kwh = result.details["uncapped"]["facility_kwh"]
    assert isinstance(facility_kwh, float)
    assert result.policies["uncapped"]["carbon_g"] == pytest.approx(180.0 * facility_kwh)


def test_generated_recirculation_rows_stay_in_the_configured_band() -> None:
    matrix = physics.generate_recirculation(3, 6, 0.05, 0.35, seed=1)
    shares = matrix.sum(axis=1)
    assert shares.min() >= 0.05 - 1e-12
    assert shares.max() <= 0.35 + 1e-12
    assert np.allclose(np.diag(matrix), 0.0)
