"""Record a twin trace for the live path's replay (issue 17): OpenMetrics and decisions.

Runs a short window of a scenario for one policy and writes, in `--out`:

- `trace.om`: the series the live controller queries (Kepler pod and node power, vLLM tokens,
  finished requests and waiting requests), stamped from `--start` (Unix seconds; default two
  hours before the last whole hour), for `promtool tsdb create-blocks-from openmetrics`;
- `trace.json`: each decision's targets as the cluster showed them, and the ceilings decided.

    python hack/twin_trace.py default --start-hour 14 --minutes 40 --out /tmp/trace
    promtool tsdb create-blocks-from openmetrics /tmp/trace/trace.om /tmp/trace/data

`tests/integration/test_replay.py` does the same and replays it through the reconciler's own
measurement and policy step (`docs/simulate.md`, "Replaying a trace through the live path").
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from climatik.sim.scenario import load_scenario
from climatik.sim.trace import record_trace, trace_openmetrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="default")
    parser.add_argument("--policy", default="headroom")
    parser.add_argument("--start-hour", type=float, default=14.0)
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--start", type=float, help="Unix seconds of the first decision")
    parser.add_argument("--out", type=Path, default=Path("trace"))
    args = parser.parse_args()
    trace = record_trace(
        load_scenario(args.scenario),
        policy=args.policy,
        start_hour=args.start_hour,
        minutes=args.minutes,
    )
    start = args.start
    if start is None:
        start = math.floor(time.time() / 3600.0) * 3600.0 - 2 * 3600.0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trace.om").write_text(trace_openmetrics(trace, start))
    (args.out / "trace.json").write_text(trace.to_json())
    changes = sum(
        a.ceiling != b.ceiling
        for before, after in zip(trace.rounds, trace.rounds[1:], strict=False)
        for a, b in zip(before.targets, after.targets, strict=True)
    )
    print(
        f"{len(trace.rounds)} decisions ({changes} ceiling changes) of {args.policy} on "
        f"{args.scenario} from {args.start_hour:g} h, first at {start:.0f}: {args.out}/"
    )


if __name__ == "__main__":
    main()
