"""Where the next replica should go, which replica goes first, and how warm the supply air may be.

MinHR (Moore et al. 2005) ranks places by their heat recirculation factor: the inlet temperature
rise, summed over every inlet, that one kW dissipated at the place causes. Zone-based
discretization groups places into zones and balances load by zone. Climatik's score combines
both with the place's thermal headroom (limit minus inlet), power headroom (limit minus power),
the cooling efficiency at its supply-air temperature (CoP, Tang et al. 2008) and a smoothing term
that keeps services with correlated power profiles apart (SmoothOperator: the Pearson correlation
of the service's power series with the place's existing load series; a place whose load peaks
when the service peaks is penalised, one that peaks out of phase is rewarded).

Where the heat matrix is known (Tang et al. 2008: D, the inlet rise of every inlet per kW at
every place, from the ConfigMap or estimated from history), the score also predicts what matters
for cooling: how much the replica's added watts would raise the *hottest* inlet of the room,
max_k(T_k + D_k,place · ΔP) - max_k T_k. The cooling unit sets the supply air by that hottest
inlet, so a placement that keeps it lower lets the supply air run warmer (higher CoP, less
cooling energy) or, when the supply is already as cold as it goes, keeps the inlets cooler. The
factor (MinHR, the column's sum) stays as the fallback and the tie-break. Scale-in uses the same
prediction the other way round: the replica whose removal lowers the hottest inlet most goes
first (`score_scale_in`, fed to `order_pods_for_scale_in`).

The same functions run in the live controller and in the twin (`climatik simulate`).

Guarantees: pure and deterministic (ties break by place id); every score is finite whatever the
inputs (unknown or non-finite readings count as "no opinion", never as zero headroom); an
inadmissible place (at or over a measured limit) never ranks above an admissible one (of the
same seating) and never gets a preferred-affinity weight; a place with no seat for one more
replica (`seats` 0, from VPA's footprint) ranks after every place with one and gets no
preferred weight either; with everything else equal, more headroom never lowers a score.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from itertools import groupby

import numpy as np
import numpy.typing as npt

from climatik.domain.placement import (
    InletReading,
    Migration,
    PlacementStrategy,
    PlacementWeights,
    PlaceObservation,
    PlaceScore,
    RecirculationEstimate,
    SupplySetpoint,
    SupplySettings,
)
from climatik.policies.heat_fit import estimate_recirculation

__all__ = [
    "InletReading",
    "PlaceObservation",
    "PlaceScore",
    "PlacementStrategy",
    "PlacementWeights",
    "RecirculationEstimate",
    "SupplySetpoint",
    "SupplySettings",
    "choose_migration",
    "cooling_cop",
    "estimate_recirculation",
    "order_pods_for_scale_in",
    "pearson_correlation",
    "predicted_peak_inlet_c",
    "preferred_rack_weights",
    "recommend_supply_setpoints",
    "removal_could_gain",
    "score_racks",
    "score_scale_in",
    "soft_peak_c",
]

# Terms are clamped so that absurd readings (1e300 W) still give finite, comparable scores.
_TERM_LIMIT = 1e9
_MIN_SERIES = 3
_MAX_AFFINITY_WEIGHT = 100  # Kubernetes' bound for preferredDuringScheduling weights
_MIN_AFFINITY_WEIGHT = 1


def _known(value: float | None) -> float | None:
    """`value` when it is a finite number, else None (NaN and ±inf are not readings)."""
    if value is None or not math.isfinite(value):
        return None
    return value


def _clamp(value: float, low: float = -_TERM_LIMIT, high: float = _TERM_LIMIT) -> float:
    return min(max(value, low), high)


def cooling_cop(supply_c: float) -> float:
    """Coefficient of performance of a chilled-water CRAC at supply temperature `supply_c` (°C).

    CoP(T) = 0.0068 T² + 0.0008 T + 0.458 (Moore et al. 2005, HP Utility Data Center); always
    positive (its minimum is about 0.458), so cooling power P_IT / CoP is always finite.
    """
    t = _clamp(supply_c, -50.0, 60.0)
    return 0.0068 * t * t + 0.0008 * t + 0.458


def pearson_correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Correlation of the last common samples of `a` and `b`; None when it is undefined.

    The series are aligned at their ends (both end "now"). Fewer than three common finite
    samples, or a flat series, has no correlation: None, not 0.
    """
    n = min(len(a), len(b))
    if n < _MIN_SERIES:
        return None
    x = np.asarray(a[len(a) - n :], dtype=np.float64)
    y = np.asarray(b[len(b) - n :], dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    if int(finite.sum()) < _MIN_SERIES:
        return None
    x = np.clip(x[finite], -_TERM_LIMIT, _TERM_LIMIT)
    y = np.clip(y[finite], -_TERM_LIMIT, _TERM_LIMIT)
    dx = x - x.mean()
    dy = y - y.mean()
    sx = float(np.sqrt(np.dot(dx, dx)))
    sy = float(np.sqrt(np.dot(dy, dy)))
    # Relative flatness, so a constant series with rounding noise is still "flat".
    if sx <= 1e-9 * (1.0 + float(np.abs(x).max())) or sy <= 1e-9 * (1.0 + float(np.abs(y).max())):
        return None
    r = float(np.dot(dx, dy)) / (sx * sy)
    return max(-1.0, min(1.0, r))


def _zone_mean_kw(places: Sequence[PlaceObservation]) -> float | None:
    by_zone: dict[str, float] = {}
    for place in places:
        watts = _known(place.zone_watts)
        if watts is not None:
            by_zone[place.zone] = _clamp(watts) / 1000.0
    if not by_zone:
        return None
    return sum(by_zone.values()) / len(by_zone)


def _recirculation(place: PlaceObservation) -> float | None:
    """The place's recirculation factor, never below 0: heat never cools an inlet, so a negative
    (mistyped, or a noisy estimate) must not make a place look better than a perfect one."""
    factor = _known(place.recirculation_c_per_kw)
    return None if factor is None else max(0.0, factor)


def _known_inlets(
    places: Sequence[PlaceObservation], inlets_c: Mapping[str, float] | None
) -> dict[str, float]:
    """Every known inlet temperature: the places' own, overridden and extended by `inlets_c`."""
    out: dict[str, float] = {}
    for place in places:
        inlet = _known(place.inlet_c)
        if inlet is not None:
            out[place.place_id] = _clamp(inlet)
    for place_id, value in (inlets_c or {}).items():
        inlet = _known(value)
        if inlet is not None:
            out[place_id] = _clamp(inlet)
    return out


@functools.lru_cache(maxsize=4096)
def _column_arrays(
    column: tuple[tuple[str, float], ...],
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float64]]:
    """A heat-matrix column as (inlet ids, coefficients) arrays, read-only.

    Cached: a controller (or the twin) scores the same racks' columns again and again, and a
    column names every inlet, so reading it entry by entry would dominate the scoring time."""
    ids = np.array([inlet_id for inlet_id, _ in column], dtype=np.str_)
    coefficients = np.array([value for _, value in column], dtype=np.float64)
    ids.setflags(write=False)
    coefficients.setflags(write=False)
    return ids, coefficients


class _Room:
    """The known inlets as arrays sorted by place id (built once per scoring call)."""

    __slots__ = ("ids", "temps_c")

    def __init__(self, inlets_c: Mapping[str, float]) -> None:
        known = [(k, _known(v)) for k, v in inlets_c.items()]
        pairs = sorted((k, _clamp(v)) for k, v in known if v is not None)
        self.ids: npt.NDArray[np.str_] = np.array([k for k, _ in pairs], dtype=np.str_)
        self.temps_c: npt.NDArray[np.float64] = np.array([v for _, v in pairs], dtype=np.float64)

    def peak_c(self, place: PlaceObservation, delta_watts: float) -> float | None:
        after = self.after_c(place, delta_watts)
        return None if after is None else float(after.max())

    def after_c(
        self, place: PlaceObservation, delta_watts: float
    ) -> npt.NDArray[np.float64] | None:
        """Every known inlet once `delta_watts` more are dissipated at `place` (None: no
        column or no inlets)."""
        delta = _known(delta_watts)
        if delta is None or not self.ids.size:
            return None
        column = place.inlet_rise_c_per_kw
        if not column:
            return None
        ids, coefficients = _column_arrays(column)
        finite = np.isfinite(coefficients)
        if not finite.any():
            return None
        # Where each named inlet sits among the known ones (ids are sorted); -1: not known.
        rows = np.searchsorted(self.ids, ids)
        inside = rows < self.ids.size
        found = np.zeros(rows.shape, dtype=bool)
        found[inside] = self.ids[rows[inside]] == ids[inside]
        use = finite & found
        rise = np.zeros(self.temps_c.shape)
        # An inlet named twice in a column counts with its largest rise (the cautious reading).
        np.maximum.at(rise, rows[use], np.clip(coefficients[use], 0.0, _TERM_LIMIT))
        return np.clip(self.temps_c + rise * (_clamp(delta) / 1000.0), -_TERM_LIMIT, _TERM_LIMIT)


def soft_peak_c(temps_c: npt.NDArray[np.float64], softness_c: float) -> float:
    """τ · log Σ exp(T_k / τ): the hottest inlet, plus a little for every inlet within a few τ
    of it (τ = `softness_c`; 0 gives the plain max).

    A placement scored by the hottest inlet alone sees no difference between heating an inlet
    that is 0.1 °C under the peak and one that is 5 °C under it, as long as neither passes the
    peak; the next replica then finds two inlets at the peak where it could have found one. The
    soft peak charges for closing on it, so the room's inlets stay spread below it."""
    if temps_c.size == 0:
        return float("nan")
    peak = float(temps_c.max())
    if softness_c <= 0:
        return peak
    return peak + softness_c * float(np.log(np.exp((temps_c - peak) / softness_c).sum()))


def predicted_peak_inlet_c(
    place: PlaceObservation, inlets_c: Mapping[str, float], delta_watts: float
) -> float | None:
    """The hottest inlet once `delta_watts` more (negative: fewer) are dissipated at `place`.

    max_k(T_k + D[k, place] · ΔP) over the known inlets T_k, with D the place's heat-matrix
    column (`inlet_rise_c_per_kw`; inlets it does not name get no rise, negative coefficients
    count as 0: heat never cools an inlet). None when the column or the inlets are unknown.
    """
    return _Room(inlets_c).peak_c(place, delta_watts)


def _climatik_score(
    place: PlaceObservation,
    weights: PlacementWeights,
    zone_mean_kw: float | None,
    correlation: float | None,
    *,
    predicted_peak_c: float | None = None,
    peak_change_c: float | None = None,
    soft_change_c: float | None = None,
) -> tuple[float, str]:
    parts: list[str] = []
    hrf = _recirculation(place)
    score = 0.0
    if predicted_peak_c is not None and peak_change_c is not None:
        # The change, not the absolute prediction: a place whose rise is only estimated (no
        # column) must compete on the same footing as one with a column, not on room
        # temperature. Scored on the soft peak's change where it is known.
        change = peak_change_c if soft_change_c is None else soft_change_c
        score -= _clamp(weights.peak_inlet_per_c * change)
        parts.append(f"hottest inlet {predicted_peak_c:.1f} °C ({peak_change_c:+.2f} °C)")
    if hrf is not None:
        score -= _clamp(weights.recirculation_per_c_per_kw * _clamp(hrf))
        parts.append(f"recirculation {hrf:.3f} °C/kW")
    thermal = _known(place.thermal_headroom_c)
    if thermal is not None:
        capped = min(thermal, weights.max_thermal_headroom_c)
        score += _clamp(weights.thermal_per_c * _clamp(capped))
        parts.append(f"{thermal:.1f} °C headroom")
    power = _known(place.power_headroom_w)
    if power is not None:
        capped_kw = min(_clamp(power) / 1000.0, weights.max_power_headroom_kw)
        score += _clamp(weights.power_per_kw * capped_kw)
        parts.append(f"{power / 1000.0:.1f} kW headroom")
    zone_w = _known(place.zone_watts)
    if zone_w is not None and zone_mean_kw is not None:
        excess_kw = _clamp(zone_w) / 1000.0 - zone_mean_kw
        score -= _clamp(weights.zone_per_kw * excess_kw)
        parts.append(f"zone {place.zone or '-'} {excess_kw:+.1f} kW vs mean")
    supply = _known(place.supply_c)
    if supply is not None:
        cop = cooling_cop(supply)
        score -= weights.cooling_per_kw_per_kw / cop
        parts.append(f"CoP {cop:.2f} at {supply:.1f} °C supply")
    if correlation is not None:
        score -= weights.correlation * correlation
        parts.append(f"power correlation {correlation:+.2f}")
    return score, ", ".join(parts) or "no readings"


def score_racks(
    places: Sequence[PlaceObservation],
    strategy: PlacementStrategy = PlacementStrategy.CLIMATIK,
    weights: PlacementWeights | None = None,
    service_series_w: Sequence[float] | None = None,
    *,
    added_watts: float | None = None,
    inlets_c: Mapping[str, float] | None = None,
) -> tuple[PlaceScore, ...]:
    """Score every place, best first (admissible before inadmissible, then score, then id).

    `service_series_w` is the recent power of the service being placed, on the same time grid
    as the places' `load_series_w`; it feeds the smoothing term of the `climatik` strategy.
    `added_watts` is what one more replica adds to a place's draw (busy minus idle); with it
    and a place's heat-matrix column the `climatik` strategy penalises the predicted rise of the
    room's hottest inlet. `inlets_c` are the inlets to predict (by place id) beyond the
    candidates' own, e.g. those of full racks that are no candidates but can still be heated.
    Inadmissible places are kept (marked, last) so callers can exclude them explicitly.
    """
    weights = weights or PlacementWeights()
    zone_mean_kw = _zone_mean_kw(places)
    inlets = _known_inlets(places, inlets_c) if added_watts is not None else {}
    current_peak_c = max(inlets.values()) if inlets else None
    room = _Room(inlets)
    softness = weights.peak_softness_c
    current_soft_c = soft_peak_c(room.temps_c, softness)
    predicted: dict[str, float] = {}
    soft_change: dict[str, float] = {}
    if strategy is PlacementStrategy.CLIMATIK and current_peak_c is not None and added_watts:
        for place in places:
            after = room.after_c(place, max(0.0, added_watts))
            if after is not None:
                predicted[place.place_id] = float(after.max())
                soft_change[place.place_id] = max(
                    0.0, soft_peak_c(after, softness) - current_soft_c
                )
    # A place without a column gets a cautious estimate once any candidate has a prediction:
    # its recirculation factor times the watts (the most any one inlet can rise), else the
    # worst predicted rise. Otherwise missing knowledge would look like a cool spot.
    worst_rise_c = max((p - (current_peak_c or 0.0) for p in predicted.values()), default=0.0)
    scores: list[PlaceScore] = []
    for place in places:
        hrf = _recirculation(place) or 0.0
        correlation: float | None = None
        peak_change_c: float | None = None
        peak_c: float | None = None
        match strategy:
            case PlacementStrategy.MINHR:
                score = -_clamp(hrf)
                reason = f"recirculation {hrf:.3f} °C/kW"
            case PlacementStrategy.ZONE:
                zone_kw = _clamp(_known(place.zone_watts) or 0.0) / 1000.0
                # Least loaded zone first; inside a zone, least recirculation.
                score = -zone_kw - 1e-3 * _clamp(hrf)
                reason = f"zone {place.zone or '-'} at {zone_kw:.1f} kW"
            case PlacementStrategy.CLIMATIK:
                if service_series_w is not None and place.load_series_w:
                    correlation = pearson_correlation(service_series_w, place.load_series_w)
                if current_peak_c is not None and predicted:
                    peak_c = predicted.get(place.place_id)
                    if peak_c is None:
                        factor = _recirculation(place)
                        rise_c = (
                            worst_rise_c
                            if factor is None or added_watts is None
                            else _clamp(max(0.0, factor) * max(0.0, added_watts) / 1000.0)
                        )
                        peak_c = current_peak_c + rise_c
                    peak_change_c = max(0.0, peak_c - current_peak_c)
                score, reason = _climatik_score(
                    place,
                    weights,
                    zone_mean_kw,
                    correlation,
                    predicted_peak_c=peak_c,
                    peak_change_c=peak_change_c,
                    soft_change_c=soft_change.get(place.place_id),
                )
        admissible = place.admissible
        if not admissible:
            reason += "; at a power or temperature limit"
        seated = place.seats != 0
        if not seated:
            reason += "; no node seats one more replica"
        scores.append(
            PlaceScore(
                place.place_id, score, admissible, reason, correlation, peak_change_c, seated
            )
        )
    scores.sort(key=lambda s: (not s.seated, not s.admissible, -s.score, s.place_id))
    return tuple(scores)


def score_scale_in(
    places: Sequence[PlaceObservation],
    removed_watts: float | None = None,
    inlets_c: Mapping[str, float] | None = None,
    weights: PlacementWeights | None = None,
    service_series_w: Sequence[float] | None = None,
) -> tuple[PlaceScore, ...]:
    """How much each place is worth keeping a replica on, best to keep first.

    The `climatik` placement score of the place, less `peak_inlet_per_c` per °C by which
    removing one replica (`removed_watts`, busy minus idle) there would lower the room's hottest
    inlet (predicted from its heat-matrix column). Feed the result to `order_pods_for_scale_in`:
    the lowest goes first, so scale-in removes the replica that cools the hottest inlet most,
    then (without a column, or on a tie) the worst place to add one. Places at a limit stay
    inadmissible and go before all others.
    """
    weights = weights or PlacementWeights()
    # Seats are room for one more replica: nothing to do with which one goes.
    places = [p if p.seats is None else dataclasses.replace(p, seats=None) for p in places]
    base = score_racks(places, PlacementStrategy.CLIMATIK, weights, service_series_w)
    if removed_watts is None:
        return base
    inlets = _known_inlets(places, inlets_c)
    if not inlets:
        return base
    current_peak_c = max(inlets.values())
    room = _Room(inlets)
    current_soft_c = soft_peak_c(room.temps_c, weights.peak_softness_c)
    by_id = {place.place_id: place for place in places}
    out: list[PlaceScore] = []
    for s in base:
        after = room.after_c(by_id[s.place_id], -max(0.0, removed_watts))
        if after is None:
            out.append(s)
            continue
        drop_c = max(0.0, current_peak_c - float(after.max()))
        soft_drop_c = max(0.0, current_soft_c - soft_peak_c(after, weights.peak_softness_c))
        score = _clamp(s.score - weights.peak_inlet_per_c * soft_drop_c)
        reason = f"removal lowers the hottest inlet by {drop_c:.2f} °C, {s.reason}"
        out.append(PlaceScore(s.place_id, score, s.admissible, reason, s.correlation, -drop_c))
    out.sort(key=lambda s: (not s.admissible, -s.score, s.place_id))
    return tuple(out)


def removal_could_gain(
    sources: Sequence[PlaceObservation],
    replica_watts: float | None,
    inlets_c: Mapping[str, float] | None,
    min_gain_c: float,
) -> bool:
    """Whether removing one replica's watts from any of `sources` lowers the hottest inlet by
    `min_gain_c`: with `inlets_c` naming every inlet of the room (the target's among them), an
    upper bound on every move `choose_migration` could find from them (the arriving heat only
    adds), so a caller that must rank places to find the target may skip that work when this
    says no."""
    watts = _known(replica_watts)
    if watts is None or watts <= 0:
        return False
    room = _Room(_known_inlets(sources, inlets_c))
    if not room.temps_c.size:
        return False
    current_c = float(room.temps_c.max())
    for source in sources:
        leaving = room.after_c(source, -watts)
        if leaving is not None and current_c - float(leaving.max()) >= min_gain_c:
            return True
    return False


def choose_migration(
    sources: Sequence[PlaceObservation],
    target: PlaceObservation,
    replica_watts: float | None,
    inlets_c: Mapping[str, float] | None,
    min_gain_c: float,
) -> Migration | None:
    """The move of one ready replica from one of `sources` to `target` that lowers the room's
    hottest inlet most, when it lowers it by at least `min_gain_c`; else None.

    A replica placed well when it started may sit badly once the room's load has moved: the
    scale-in order only corrects that when the workload shrinks. Predicted with the heat matrix
    as scoring is: max_k(T_k - D[k, source] · w + D[k, target] · w), w the replica's watts over
    idle. `target` is where its replacement would go (the workload's best-ranked place, the one
    the webhook prefers). None without watts, inlets or both columns, or when `target` is at a
    limit or has no seat: a move must never put a replica where a new one may not go."""
    watts = _known(replica_watts)
    if watts is None or watts <= 0 or not target.admissible or target.seats == 0:
        return None
    room = _Room(_known_inlets([*sources, target], inlets_c))
    arriving = room.after_c(target, watts)
    if arriving is None:
        return None
    current_c = float(room.temps_c.max())
    best: Migration | None = None
    for source in sorted(sources, key=lambda place: place.place_id):
        if source.place_id == target.place_id:
            continue
        leaving = room.after_c(source, -watts)
        if leaving is None:
            continue
        after_c = float((leaving + arriving - room.temps_c).max())
        gain_c = current_c - after_c
        if gain_c >= min_gain_c and (best is None or gain_c > best.gain_c):
            reason = (
                f"moving one replica ({watts / 1000.0:.1f} kW) from {source.place_id} to "
                f"{target.place_id} lowers the hottest inlet from {current_c:.2f} to "
                f"{after_c:.2f} °C"
            )
            best = Migration(source.place_id, target.place_id, gain_c, reason)
    return best


def preferred_rack_weights(
    scores: Sequence[PlaceScore], max_racks: int = 10
) -> tuple[tuple[str, int], ...]:
    """Node-affinity weights (1..100) for the best admissible places with a seat, best first.

    The best place gets 100 and the worst preferred one 1, linearly in score between them, so
    the scheduler's preference follows the score's spread; equal scores get equal weights.
    Inadmissible places, and places without a seat for one more replica, get no weight at all.
    """
    ranked = sorted(
        (s for s in scores if s.admissible and s.seated), key=lambda s: (-s.score, s.place_id)
    )[: max(0, max_racks)]
    if not ranked:
        return ()
    best, worst = ranked[0].score, ranked[-1].score
    spread = best - worst
    out: list[tuple[str, int]] = []
    for s in ranked:
        if spread <= 0:
            weight = _MAX_AFFINITY_WEIGHT
        else:
            fraction = (s.score - worst) / spread
            weight = round(
                _MIN_AFFINITY_WEIGHT + fraction * (_MAX_AFFINITY_WEIGHT - _MIN_AFFINITY_WEIGHT)
            )
        out.append((s.place_id, int(weight)))
    return tuple(out)


def order_pods_for_scale_in(
    pod_places: Mapping[str, str | None], scores: Sequence[PlaceScore]
) -> dict[str, int]:
    """`controller.kubernetes.io/pod-deletion-cost` per pod: lower is deleted first.

    Pods on the worst place go first: an admissible place ranked i-th of A (best first) costs
    A - i (>= 1); an inadmissible place (over a limit) costs below zero, the worst lowest; a pod
    whose place is unknown (unscheduled, or a node without a rack) costs 0, Kubernetes' default.
    Costs follow the ranking, not the raw score, so they change only when the order changes
    (each change is a pod patch).
    """
    ranked = sorted(scores, key=lambda s: (not s.admissible, -s.score, s.place_id))
    admissible = [s for s in ranked if s.admissible]
    inadmissible = [s for s in ranked if not s.admissible]
    cost: dict[str, int] = {}
    for i, s in enumerate(admissible):
        cost[s.place_id] = len(admissible) - i
    for j, s in enumerate(inadmissible):
        cost[s.place_id] = -(j + 1)
    return {
        pod: cost.get(place, 0) if place is not None else 0
        for pod, place in sorted(pod_places.items())
    }


def recommend_supply_setpoints(
    readings: Sequence[InletReading], settings: SupplySettings | None = None
) -> tuple[SupplySetpoint, ...]:
    """Per cooling group (a rack or a zone): raise the supply air until the hottest inlet is at
    the redline (less the guard), or lower it when an inlet is above.

    The change is bounded by `max_step_c` per call; with a known current supply the setpoint is
    clamped to [min_supply_c, max_supply_c]. Non-finite readings are ignored; a group with none
    left gets no recommendation. Groups come back sorted by name.
    """
    settings = settings or SupplySettings()
    usable = sorted(
        (r for r in readings if math.isfinite(r.inlet_c)), key=lambda r: (r.group, r.place_id)
    )
    target_c = settings.redline_c - settings.guard_c
    out: list[SupplySetpoint] = []
    for group, members_iter in groupby(usable, key=lambda r: r.group):
        members = list(members_iter)
        hottest = max(members, key=lambda r: (r.inlet_c, r.place_id))
        change = _clamp(target_c - hottest.inlet_c, -settings.max_step_c, settings.max_step_c)
        supplies = [r.supply_c for r in members if r.supply_c is not None]
        supplies = [v for v in supplies if math.isfinite(v)]
        supply: float | None = None
        cop: float | None = None
        cooling_w: float | None = None
        if supplies:
            current = max(supplies)
            supply = min(max(current + change, settings.min_supply_c), settings.max_supply_c)
            change = supply - current
            cop = cooling_cop(supply)
            it_w = [r.it_watts for r in members if _known(r.it_watts) is not None]
            if it_w:
                cooling_w = sum(w for w in it_w if w is not None) / cop
        direction = "raise" if change > 0 else "lower" if change < 0 else "keep"
        reason = (
            f"{direction} supply by {abs(change):.1f} °C: hottest inlet {hottest.place_id} at "
            f"{hottest.inlet_c:.1f} °C, target {target_c:.1f} °C (redline "
            f"{settings.redline_c:.1f} °C)"
        )
        out.append(
            SupplySetpoint(
                group=group,
                hottest_place_id=hottest.place_id,
                hottest_inlet_c=hottest.inlet_c,
                change_c=change,
                supply_c=supply,
                cop=cop,
                cooling_watts=cooling_w,
                reason=reason,
            )
        )
    return tuple(out)
