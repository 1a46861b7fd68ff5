"""The world's own figures (`climatik_world_*`), in simulated time: what it served and drew,
for a demo to set beside the twin's. Not an exporter a real site has; the controller never
queries it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from climatik.world.exposition.text import Scrape, header
from climatik.world.tally import SiteFigures


def render_world(site: SiteFigures | None, scrape: Scrape) -> Iterator[str]:
    if site is None:
        return
    scalars = (
        ("climatik_world_simulated_seconds_total", "counter", site.simulated_s),
        ("climatik_world_site_power_watts", "gauge", site.site_w),
        ("climatik_world_supply_air_celsius", "gauge", site.supply_c),
        ("climatik_world_it_energy_joules_total", "counter", site.energy_j),
        ("climatik_world_cap_violation_watt_seconds_total", "counter", site.cap_violation_ws),
        ("climatik_world_max_overshoot_watts", "gauge", site.max_overshoot_w),
    )
    for metric, kind, value in scalars:
        yield from header(metric, kind, f"The world's {metric.removeprefix('climatik_world_')}")
        yield scrape.sample(metric, {}, value)
    per_service: tuple[tuple[str, str, Callable[[SiteFigures], dict[str, float]]], ...] = (
        ("climatik_world_demand_requests_per_second", "gauge", lambda s: s.demand_rps),
        ("climatik_world_tokens_total", "counter", lambda s: s.tokens),
        ("climatik_world_requests_arrived_total", "counter", lambda s: s.arrived),
        ("climatik_world_requests_met_slo_total", "counter", lambda s: s.met_slo),
    )
    for metric, kind, values in per_service:
        yield from header(metric, kind, f"The world's {metric.removeprefix('climatik_world_')}")
        for service, value in sorted(values(site).items()):
            yield scrape.sample(metric, {"service": service}, value)
