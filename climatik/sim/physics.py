"""The twin's physics as plain numpy functions (SIMULATOR.md): power, throughput, heat, cooling.

Every function is pure and vectorised: it accepts arrays of any shape that broadcast together
(policies x servers, or policies x services) and never loops in Python, so the engine can advance
every policy of a run in the same step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    # Types only: the scenario schema uses `server_power_w` for its idle-floor check.
    from climatik.sim.scenario import GpuModel, ModelClass, Scenario

FloatArray = npt.NDArray[np.float64]
ArrayLike = FloatArray | float

J_PER_KWH = 3.6e6


def gpu_phase_power_w(max_w: float, clock_ratio: ArrayLike, gpu: GpuModel) -> FloatArray:
    """P_x(f) = P_idle + (P_x,max - P_idle) * (f / f_max)^gamma."""
    ratio = np.asarray(clock_ratio, dtype=np.float64)
    return np.asarray(gpu.idle_w + (max_w - gpu.idle_w) * ratio**gpu.gamma, dtype=np.float64)


def gpu_power_w(
    clock_ratio: ArrayLike, busy_prefill: ArrayLike, busy_decode: ArrayLike, gpu: GpuModel
) -> FloatArray:
    """Mean power of one GPU that spends the given shares of a step in prefill and decode."""
    pre = gpu_phase_power_w(gpu.prefill_max_w, clock_ratio, gpu)
    dec = gpu_phase_power_w(gpu.decode_max_w, clock_ratio, gpu)
    return np.asarray(
        gpu.idle_w
        + np.asarray(busy_prefill) * (pre - gpu.idle_w)
        + np.asarray(busy_decode) * (dec - gpu.idle_w),
        dtype=np.float64,
    )


def server_power_w(
    gpu_w: ArrayLike, gpus: int, idle_gpu_w: float, base_w: float, overhead: float
) -> FloatArray:
    """P_srv = P_base + k * sum(P_g - P_idle) + sum(P_g) for `gpus` GPUs drawing `gpu_w` each."""
    gpu_arr = np.asarray(gpu_w, dtype=np.float64)
    return np.asarray(
        base_w + overhead * gpus * (gpu_arr - idle_gpu_w) + gpus * gpu_arr, dtype=np.float64
    )


def prefill_s(model: ModelClass, prompt_tokens: int, clock_ratio: ArrayLike) -> FloatArray:
    """Prefill time of one request: linear in prompt length, scaling with 1/f."""
    at_max = model.prefill_base_s + model.prefill_s_per_1k_tokens * prompt_tokens / 1000.0
    return np.asarray(at_max / np.asarray(clock_ratio, dtype=np.float64), dtype=np.float64)


def decode_step_s(
    model: ModelClass, batch_fraction: ArrayLike, clock_ratio: ArrayLike
) -> FloatArray:
    """Decode step time at a batch of `batch_fraction * max_batch`, memory-bound share beta."""
    batch = np.clip(np.asarray(batch_fraction, dtype=np.float64), 0.0, 1.0)
    at_max = (
        model.decode_step_s_batch1
        + (model.decode_step_s_max_batch - model.decode_step_s_batch1) * batch
    )
    beta = model.memory_bound_beta
    return np.asarray(
        at_max * (beta + (1 - beta) / np.asarray(clock_ratio, dtype=np.float64)), dtype=np.float64
    )


def request_busy_s(
    model: ModelClass, prompt_tokens: int, output_tokens: int, clock_ratio: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Replica time one request costs at full batch: (prefill seconds, decode seconds)."""
    pre = prefill_s(model, prompt_tokens, clock_ratio)
    dec = output_tokens * decode_step_s(model, 1.0, clock_ratio) / model.max_batch
    return pre, dec


def clock_sweep_mhz(gpu: GpuModel) -> FloatArray:
    """The SM clocks a tuning sweep measures: every 90 MHz from the minimum, and the maximum."""
    clocks = np.arange(gpu.min_clock_mhz, gpu.max_clock_mhz + 1, 90.0)
    return np.asarray(np.unique(np.append(clocks, gpu.max_clock_mhz)), dtype=np.float64)


def ttft_wait_s(
    queue: ArrayLike, capacity_rps: ArrayLike, prefill_s: ArrayLike, utilisation: ArrayLike
) -> FloatArray:
    """Mean wait before a request's first token: the queue's drain time plus an in-replica
    wait that grows with utilisation (prefill time x u / (1.02 - u))."""
    util = np.asarray(utilisation, dtype=np.float64)
    return np.asarray(
        np.asarray(queue) / np.maximum(capacity_rps, 1e-9)
        + np.asarray(prefill_s) * util / (1.02 - util),
        dtype=np.float64,
    )


def ttft_met_fraction(ttft_slo_s: ArrayLike, prefill_s: ArrayLike, wait_s: ArrayLike) -> FloatArray:
    """Share of requests whose time to first token (prefill plus an exponential wait of the
    given mean) is within the objective."""
    slack = np.asarray(ttft_slo_s) - np.asarray(prefill_s)
    return np.asarray(
        np.where(
            slack > 0,
            1 - np.exp(-np.maximum(slack, 0) / np.maximum(np.asarray(wait_s), 1e-6)),
            0.0,
        ),
        dtype=np.float64,
    )


def cop(supply_c: ArrayLike) -> FloatArray:
    """Coefficient of performance of the cooling unit: 0.0068 T^2 + 0.0008 T + 0.458."""
    t = np.asarray(supply_c, dtype=np.float64)
    return np.asarray(0.0068 * t * t + 0.0008 * t + 0.458, dtype=np.float64)


def carbon_g(intensity_g_per_kwh: ArrayLike, facility_w: ArrayLike, seconds: float) -> FloatArray:
    """Location-based emissions C = CI * P_facility * dt, in grams."""
    return np.asarray(
        np.asarray(intensity_g_per_kwh) * np.asarray(facility_w) * seconds / J_PER_KWH,
        dtype=np.float64,
    )


def heat_matrix(recirculation: FloatArray, heat_capacity_w_per_k: FloatArray) -> FloatArray:
    """D = (K - A^T K)^-1 - K^-1 (Tang et al. 2008): inlet rise (K) per watt at each node.

    `recirculation[i, j]` is the share of node i's exhaust that reaches node j's inlet;
    `heat_capacity_w_per_k[i]` is rho * airflow * c_p of node i.
    """
    k = np.diag(heat_capacity_w_per_k)
    return np.asarray(
        np.linalg.inv(k - recirculation.T @ k) - np.diag(1.0 / heat_capacity_w_per_k),
        dtype=np.float64,
    )


def room_heat_matrix(scenario: Scenario) -> FloatArray:
    """The room's D matrix: from the scenario's recirculation matrix or its geometry."""
    racks = scenario.racks
    rec = racks.recirculation
    if rec.matrix is not None:
        a_matrix = np.asarray(rec.matrix, dtype=np.float64)
    elif rec.model == "uniform":
        a_matrix = generate_recirculation(
            racks.count, racks.servers_per_rack, rec.min_fraction, rec.max_fraction, rec.seed
        )
    else:
        a_matrix = generate_local_recirculation(
            racks.count,
            racks.servers_per_rack,
            rec.min_fraction,
            rec.max_fraction,
            seed=rec.seed,
            rack_decay=rec.rack_decay,
            rise_decay=rec.rise_decay,
            fall_decay=rec.fall_decay,
            jitter=rec.jitter,
        )
    cooling = scenario.cooling
    k_node = np.full(
        racks.servers,
        cooling.air_density_kg_per_m3
        * racks.airflow_m3_per_s
        * cooling.air_heat_capacity_j_per_kg_k,
    )
    return heat_matrix(a_matrix, k_node)


def recirculation_factors_c_per_kw(d_matrix: FloatArray) -> FloatArray:
    """Heat recirculation factor of each node: summed inlet rise (°C) per kW dissipated there."""
    return np.asarray(d_matrix.sum(axis=0) * 1000.0, dtype=np.float64)


def _row_geometry(racks: int, servers_per_rack: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per server (numbered rack by rack, bottom to top): its rack, its height in the rack
    (0 bottom, 1 top) and how near the row's end its rack is (0 middle, 1 end)."""
    nodes = racks * servers_per_rack
    rack_of = np.repeat(np.arange(racks), servers_per_rack).astype(np.float64)
    height = np.tile(np.arange(servers_per_rack), racks) / max(servers_per_rack - 1, 1)
    end_row = (
        np.zeros(nodes) if racks == 1 else (np.abs(rack_of - (racks - 1) / 2) / ((racks - 1) / 2))
    )
    return rack_of, np.asarray(height, dtype=np.float64), np.asarray(end_row, dtype=np.float64)


def recirculated_shares(
    height: FloatArray,
    end_row: FloatArray,
    min_fraction: float,
    max_fraction: float,
    noise: FloatArray,
) -> FloatArray:
    """The share of each source's exhaust that reaches any inlet: more at the top of a rack
    and at the row's ends, where exhaust escapes over and around the rack (Tang et al. 2006,
    2008; Moore et al. 2005), within [min_fraction, max_fraction]."""
    exposure = 0.5 * height + 0.5 * end_row**2
    return np.asarray(
        min_fraction + (max_fraction - min_fraction) * np.clip(exposure + noise, 0.0, 1.0),
        dtype=np.float64,
    )


def generate_local_recirculation(
    racks: int,
    servers_per_rack: int,
    min_fraction: float,
    max_fraction: float,
    *,
    seed: int = 11,
    rack_decay: float = 0.7,
    rise_decay: float = 0.5,
    fall_decay: float = 0.15,
    jitter: float = 0.05,
) -> FloatArray:
    """Local recirculation in one row of racks, servers numbered rack by rack, bottom to top.

    What the CFD-derived cross-interference matrices of Tang et al. (2006, 2008) show and
    MinHR (Moore et al. 2005) relies on: a source's recirculated heat lands mostly on its own
    inlet and those nearest it, decaying with distance, farther upwards (hot air rises) than
    downwards, and little reaches the far end of the row. The weight of inlet j for source i is
    exp(-|rack_i - rack_j| / rack_decay) · exp(-(h_j - h_i) / rise_decay) above the source, or
    exp(-(h_i - h_j) / fall_decay) below it (h: height in rack heights); each row is scaled to
    the source's recirculated share (`recirculated_shares`), so rows sum to less than 1.
    """
    rng = np.random.default_rng(seed)
    rack_of, height, end_row = _row_geometry(racks, servers_per_rack)
    noise = jitter * rng.uniform(-1.0, 1.0, rack_of.size) if jitter > 0 else np.zeros(rack_of.size)
    share = recirculated_shares(height, end_row, min_fraction, max_fraction, noise)
    rack_gap = np.abs(rack_of[:, None] - rack_of[None, :])
    rise = height[None, :] - height[:, None]  # inlet above source: positive
    vertical = np.where(
        rise >= 0,
        np.exp(-np.maximum(rise, 0) / rise_decay),
        np.exp(np.minimum(rise, 0) / fall_decay),
    )
    weight = np.exp(-rack_gap / rack_decay) * vertical
    weight /= weight.sum(axis=1, keepdims=True)
    return np.asarray(weight * share[:, None], dtype=np.float64)


def generate_recirculation(
    racks: int, servers_per_rack: int, min_fraction: float, max_fraction: float, seed: int
) -> FloatArray:
    """The `uniform` recirculation matrix: the twin's first generator, kept so the built-in
    scenarios' figures stay reproducible.

    Each source recirculates between `min_fraction` and `max_fraction` of its exhaust, more at
    the row's ends and at the top of a rack, spread over every other inlet of the row with
    weights that change by at most e per rack height and e^1.5 per rack: nearly even over a
    small row, so where load sits barely moves the hottest inlet (compare
    `generate_local_recirculation`).
    """
    rng = np.random.default_rng(seed)
    nodes = racks * servers_per_rack
    rack_of = np.repeat(np.arange(racks), servers_per_rack)
    height = np.tile(np.arange(servers_per_rack), racks) / max(servers_per_rack - 1, 1)
    end_row = (
        np.zeros(nodes) if racks == 1 else (np.abs(rack_of - (racks - 1) / 2) / ((racks - 1) / 2))
    )
    exposure = 0.5 * height + 0.5 * end_row**2
    share = min_fraction + (max_fraction - min_fraction) * np.clip(
        exposure + rng.uniform(-0.05, 0.05, nodes), 0.0, 1.0
    )
    rack_gap = np.abs(rack_of[:, None] - rack_of[None, :])
    rise = height[None, :] - height[:, None]
    weight = np.exp(-1.5 * rack_gap) * np.exp(1.0 * rise)
    np.fill_diagonal(weight, 0.0)
    if nodes == 1:
        return np.zeros((1, 1))
    weight /= weight.sum(axis=1, keepdims=True)
    return np.asarray(weight * share[:, None], dtype=np.float64)
