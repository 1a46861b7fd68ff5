"""What each of a twin run's replica moves gained, against the room's own heat matrix.

Runs a scenario with `climatik-migrate` and, for every replica it moves, sets the move against
what the policy cannot know: the servers' true draws just before it and the room's own matrix.
The gain is the drop of the hottest steady inlet (supply + D · power) when the moved replica's
dynamic watts leave its server and arrive at the new one; the policy predicted at least
`spec.placement.migration.minGainCelsius` (0.1 °C) from the measured inlets and the matrix it
fitted. Also printed: whether the measured inlets named the same hottest server as the true
steady ones. `docs/placement.md` ("What the moves gain, audited") reports one run.

    python hack/migration_audit.py heatwave
    python hack/migration_audit.py heatwave --exact-knowledge
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from climatik.sim import engine
from climatik.sim.engine import Twin
from climatik.sim.replicas import migrate
from climatik.sim.scenario import load_scenario
from climatik.sim.state import TwinState
from climatik.sim.world import World

POLICY = "climatik-migrate"


@dataclass(frozen=True, slots=True)
class Move:
    hour: float
    source: int
    target: int
    watts: float
    true_gain_c: float
    same_hottest: bool


class MoveAudit:
    """Wraps the twin's `migrate` step: the room just before each move, and the move."""

    def __init__(self) -> None:
        self.moves: list[Move] = []

    def migrate(self, world: World, st: TwinState, p: int, now: float) -> None:
        host, watts = st.fleet.host[p].copy(), st.room.srv_w[p].copy()
        seen_in = st.seen.srv_in[p].copy()
        migrate(world, st, p, now)
        moved = np.flatnonzero(host != st.fleet.host[p])
        if moved.size == 0:
            return
        source = int(next(i for i in moved if host[i] >= 0))
        target = int(next(i for i in moved if host[i] < 0))
        dynamic_w = float(watts[source] - world.idle_server_w)
        after = watts.copy()
        after[source] -= dynamic_w
        after[target] += dynamic_w
        rise_before, rise_after = world.d_matrix @ watts, world.d_matrix @ after
        self.moves.append(
            Move(
                hour=now / 3600.0,
                source=source,
                target=target,
                watts=dynamic_w,
                true_gain_c=float(rise_before.max() - rise_after.max()),
                same_hottest=int(np.argmax(rise_before)) == int(np.nanargmax(seen_in)),
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="heatwave")
    parser.add_argument("--hours", type=float, help="instead of the scenario's duration")
    parser.add_argument("--seed", type=int, help="other noise and random draws")
    parser.add_argument("--exact-knowledge", action="store_true")
    args = parser.parse_args()
    audit = MoveAudit()
    engine.migrate = audit.migrate  # type: ignore[attr-defined]  # called after each decision
    Twin(
        load_scenario(args.scenario),
        [POLICY],
        hours=args.hours,
        seed=args.seed,
        exact_knowledge=args.exact_knowledge,
    ).run()
    moves = audit.moves
    if not moves:
        print(f"{args.scenario}: {POLICY} moved no replica")
        return
    gains = np.array([m.true_gain_c for m in moves])
    print(f"{args.scenario}: {len(moves)} moves by {POLICY}")
    print(f"  true gain of the hottest steady inlet: mean {gains.mean():+.3f} °C")
    print(
        f"  moves that raised it: {(gains < 0).sum()}, gained under 0.05 °C: {(gains < 0.05).sum()}"
    )
    print(f"  measured and true hottest inlet differ: {sum(not m.same_hottest for m in moves)}")
    for m in moves:
        print(
            f"  {m.hour:6.2f} h  server {m.source:3d} -> {m.target:3d}  {m.watts / 1000:4.1f} kW  "
            f"true gain {m.true_gain_c:+.3f} °C{'' if m.same_hottest else '  (hottest misread)'}"
        )


if __name__ == "__main__":
    main()
