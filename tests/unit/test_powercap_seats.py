"""Rack headroom from VPA's footprint (issue 23): the seats the VPA-hold controller writes in
`status.replicaFootprints` bound the power-cap reconciler's rack headroom in replicas, in place
of the rack's free nodes, and the headroom is reported in `status.racks[].replicaHeadroom`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from climatik.api.status_models import RackSeats, ReplicaFootprintStatus
from climatik.domain.capping import CappingState
from climatik.domain.config import RackConstraint
from climatik.policies.observations import IdlePower
from climatik.reconcilers.powercap_decide import decide_round
from climatik.reconcilers.powercap_measure import CapMeasurer, CapSources
from climatik.reconcilers.replica_footprint import fewest_seats
from climatik.reconcilers.settings import CappingSettings
from climatik.sources.prometheus_pool import PrometheusPool
from tests.unit.test_powercap_idle_nodes import TARGET, _never, _Power, _Racks, config, nodes


def _footprint(name: str, **seats: int) -> ReplicaFootprintStatus:
    return ReplicaFootprintStatus(
        name=name,
        vertical_pod_autoscaler=name,
        source="VpaTarget",
        seats=[RackSeats(rack_id=r.replace("_", "-"), replicas=n) for r, n in seats.items()],
    )


def test_fewest_seats_takes_the_largest_footprint_of_the_named_targets_per_rack() -> None:
    footprints = [
        _footprint("chat", rack_a=3, rack_b=10),
        _footprint("embed", rack_a=7),
        _footprint("gone", rack_a=0, rack_c=0),  # no longer a target: not counted
    ]
    assert fewest_seats(footprints, {"chat", "embed"}) == {"rack-a": 3, "rack-b": 10}
    assert fewest_seats(footprints, {"embed"}) == {"rack-a": 7}
    assert fewest_seats(None, {"chat"}) == {}


async def _headroom(seats: Mapping[str, int] | None) -> dict[str, int | None]:
    """Each rack of 4 kW left (1 kW of 5 kW measured) with one replica at 500 W on a-1."""
    capped = config(
        racks=(
            RackConstraint("rack-a", max_power_w=5000.0),
            RackConstraint("rack-b", max_power_w=5000.0),
        )
    )
    measurer = CapMeasurer(CappingSettings(), PrometheusPool(_never), nodes())
    measured, racks = await measurer.measure(
        capped, CapSources(_Power(), _Racks()), [TARGET], IdlePower()
    )
    decided = decide_round(
        capped,
        capped.key,
        [TARGET],
        measured,
        racks,
        cap_w=capped.power_cap_w,
        state=CappingState(),
        idle=IdlePower(),
        learning=True,
        plans=None,
        wall_now=datetime(2026, 1, 1, tzinfo=UTC),
        now_s=0.0,
        seats=seats,
    )
    return {r.rack_id: r.replica_headroom for r in decided.observation.racks}


async def test_without_seats_a_racks_free_nodes_bound_its_headroom() -> None:
    assert await _headroom(None) == {"rack-a": 1, "rack-b": 2}


async def test_seats_for_the_footprint_bound_a_racks_headroom() -> None:
    """No seat for VPA's footprint on rack-a: no replica there, whatever its power allows; a
    small footprint seats 30 on rack-b, of which its 4 kW left pay for 8 at 500 W each."""
    assert await _headroom({"rack-a": 0, "rack-b": 30}) == {"rack-a": 0, "rack-b": 8}
    assert await _headroom({"rack-b": 1}) == {"rack-a": 1, "rack-b": 1}
