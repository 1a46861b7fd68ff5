"""The twin's time loop: every policy of a run advanced together, step by step, on one world.

All policies see the same arrivals, the same carbon series and the same room; their state lives
in arrays with a leading policy axis (`sim.state`), so one numpy operation advances all of them.
Every control interval each policy's decision code runs on what a Prometheus scrape would show
(lagged, averaged, a little noisy, absent during outages): the capping policies are exactly the
controller's own functions (`decide_replica_ceilings`, `score_racks`, `score_scale_in`,
`cap_for_carbon`, `choose_gpu_clock`).

Modelled on purpose: KEDA/HPA scaling (target utilisation, immediate scale-up, stabilised
scale-down, an HPA that drops to a lowered max at once), replica start-up delay, a fluid request
queue with timeouts, SLOs from queueing and batch latency, heat recirculation with inlet lag,
supply-temperature control, CoP cooling and location-based carbon. Each is one step module
(`sim.steps_*`), called here in the order the processes happen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from climatik.policies.ceiling_settings import HeadroomSettings, ThresholdSettings
from climatik.sim.policy_specs import POLICY_SPECS
from climatik.sim.replicas import cold_start, migrate, warm_start
from climatik.sim.result import SimResult
from climatik.sim.scenario import Scenario
from climatik.sim.state import TwinState, initial_state
from climatik.sim.steps_autoscale import autoscale
from climatik.sim.steps_control import decide
from climatik.sim.steps_heat import move_heat
from climatik.sim.steps_measure import Reading, learn, read, record_sample
from climatik.sim.steps_power import draw_power
from climatik.sim.steps_record import sample_history, summarise, tally_step
from climatik.sim.steps_serve import serve
from climatik.sim.world import IntArray, World, build_world


class ControlTap(Protocol):
    """Watches each control interval: what the controller read and held just before it
    decides, and what it decided (a twin trace is recorded this way, `sim.trace`)."""

    def before(
        self, world: World, st: TwinState, reading: Reading, n_tot: IntArray, now_s: float
    ) -> None: ...

    def after(self, world: World, st: TwinState) -> None: ...


class Twin:
    """One run of a scenario for a list of policies."""

    def __init__(
        self,
        scenario: Scenario,
        policies: list[str] | None = None,
        hours: float | None = None,
        seed: int | None = None,
        headroom: HeadroomSettings | None = None,
        *,
        exact_knowledge: bool = False,
        start_hour: float | None = None,
        cold_start: bool = False,
    ) -> None:
        self.scenario = scenario
        self.policy_names = list(policies or scenario.policies)
        for name in self.policy_names:
            if name not in POLICY_SPECS:
                msg = f"unknown policy {name!r}; known: {', '.join(POLICY_SPECS)}"
                raise ValueError(msg)
        self.specs = [POLICY_SPECS[name] for name in self.policy_names]
        self.hours = float(hours if hours is not None else scenario.duration_h)
        self.seed = scenario.seed if seed is None else seed
        self.headroom = headroom or HeadroomSettings()
        self.threshold = ThresholdSettings()
        self.exact_knowledge = exact_knowledge
        """Give the policies what the live controller cannot know (the server idle draw, the
        room's heat matrix, unlagged noiseless chassis power and inlets for placement): the
        labelled variant that shows what that knowledge is worth. Off: only measurements."""
        self.start_hour = start_hour
        """Run `hours` from this hour of the scenario's day (the window a live demo plays);
        None: from hour 0, on a series of `hours` alone."""
        self.cold_start = cold_start
        """Start at each service's minimum replicas, still starting (as the live demo does);
        off: warm, the replicas the first arrivals need, ready before the first step."""

    def run(
        self, progress: Callable[[float], None] | None = None, tap: ControlTap | None = None
    ) -> SimResult:
        """Advance every policy through the scenario and return its figures; `tap` watches
        every control interval."""
        world = build_world(
            self.scenario,
            self.specs,
            self.hours,
            self.headroom,
            self.threshold,
            exact=self.exact_knowledge,
            start_hour=self.start_hour,
        )
        st = initial_state(world, self.seed)
        migrating = [p for p, spec in enumerate(self.specs) if spec.migrate]
        (cold_start if self.cold_start else warm_start)(world, st)
        for k in range(world.steps):
            now_s = k * world.dt
            lam = world.rates[k]
            served = serve(world, st.timing, st.fleet, lam, now_s)
            drawn = draw_power(world, st.timing, st.room, served, st.rng)
            cooled = move_heat(world, st.room, drawn, first=k == 0)
            tally_step(world, st, k, served=served, drawn=drawn, cooled=cooled)
            record_sample(
                world, st.ring, k, served=served, drawn=drawn, room=st.room, cooled=cooled
            )
            sample_history(world, st, k, served=served, drawn=drawn, cooled=cooled)
            if world.control_due(k):
                reading = read(world, st.ring, st.rng, k)
                learn(world, st.seen, reading, st.fleet.host)
                if tap is not None:
                    tap.before(world, st, reading, served.n_tot, now_s)
                decide(world, st, reading, n_tot=served.n_tot, k=k, now_s=now_s)
                if tap is not None:
                    tap.after(world, st)
                for p in migrating:
                    migrate(world, st, p, now_s)
            autoscale(world, st, lam=lam, n_tot=served.n_tot, k=k, now_s=now_s)
            if progress is not None and k % world.prog_every == 0:
                progress(k / world.steps)
        if progress is not None:
            progress(1.0)
        return summarise(world, st, self.policy_names)
