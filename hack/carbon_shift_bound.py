"""An upper bound on what shifting deferrable work in time can save on a twin scenario.

Runs the scenario under `climatik-no-carbon` three times: as written, without its deferrable
services, and with no traffic at all. The differences split the facility emissions into the
idle room, the non-deferrable services and the deferrable ones. The bound moves ALL of the
deferrable services' IT energy to the cleanest half-hour of the run at the smallest facility
overhead the room can have (distribution losses plus cooling at the warmest supply air),
ignoring capacity, deadlines and the cap, so no carbon-aware policy can beat it.

The split is by difference of runs: the deferrable share also carries whatever the other
services did differently without them under the same cap (they had more room), so it is an
estimate of the deferrable services' own energy, not a meter reading.

    python hack/carbon_shift_bound.py carbon-swing
"""

from __future__ import annotations

import sys

from climatik.sim import physics
from climatik.sim.engine import Twin
from climatik.sim.scenario import Service, load_scenario
from climatik.sim.workload import carbon_slots

POLICY = "climatik-no-carbon"


def main(name: str) -> None:
    scenario = load_scenario(name)
    flexible = [s for s in scenario.services if s.deferrable]
    if not flexible:
        sys.exit(f"{name} has no deferrable services: nothing can be shifted")
    fixed = [s for s in scenario.services if not s.deferrable]
    silent = [
        s.model_copy(update={"traffic": s.traffic.model_copy(update={"peak_rps": 1e-6})})
        for s in scenario.services[:1]
    ]

    def run(services: list[Service]) -> tuple[dict[str, float], float]:
        """The policy's figures and its facility-to-IT energy ratio."""
        variant = scenario.model_copy(update={"services": services})
        result = Twin(variant, [POLICY]).run()
        figures = result.policies[POLICY]
        facility_kwh = result.details[POLICY]["facility_kwh"]
        assert isinstance(facility_kwh, float)
        return figures, facility_kwh / figures["energy_kwh"]

    (full, overhead), (without, _) = run(list(scenario.services)), run(fixed)
    idle, _ = run(silent)
    flexible_g = full["carbon_g"] - without["carbon_g"]
    flexible_kwh = full["energy_kwh"] - without["energy_kwh"]
    slots = carbon_slots(
        scenario.carbon.generated,
        scenario.carbon.file,
        scenario.carbon.slot_s,
        scenario.duration_h,
        scenario.source_dir,
    )
    cleanest = float(slots.min())
    # Roughly the grid intensity the deferrable work met (its emissions per facility kWh, with
    # the run's average overhead).
    met_intensity = flexible_g / (flexible_kwh * overhead)
    cooling = scenario.cooling
    least_overhead = (
        1.0 + cooling.distribution_loss_fraction + 1.0 / float(physics.cop(cooling.max_supply_c))
    )
    best_g = flexible_kwh * least_overhead * cleanest
    bound = max(0.0, flexible_g - best_g) / full["carbon_g"]
    print(f"scenario {name}, policy {POLICY}")
    print(f"  emissions {full['carbon_g'] / 1000:.1f} kg, {full['energy_kwh']:.0f} kWh IT")
    idle_share = idle["energy_kwh"] / full["energy_kwh"]
    print(f"  idle room      {idle['energy_kwh']:.0f} kWh ({idle_share:.0%} of IT energy)")
    flexible_share = flexible_g / full["carbon_g"]
    print(
        f"  deferrable     {flexible_kwh:.0f} kWh, {flexible_g / 1000:.1f} kg "
        f"({flexible_share:.0%} of emissions)"
    )
    print(
        f"  cleanest slot  {cleanest:.0f} g/kWh; deferrable work met about "
        f"{met_intensity:.0f} (run mean {float(slots.mean()):.0f}); facility overhead "
        f"{overhead:.2f} on average, {least_overhead:.2f} at best"
    )
    print(f"  bound: at most {bound:.1%} less CO2 (and per thousand tokens) from shifting")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "carbon-swing")
