"""`climatik demo`: bring the whole loop up on the dev cluster, run a scenario compressed in
time while printing progress, and take everything down.

A skeleton of issue 18's demo: it prints the world's own figures at the end (tokens, SLO
attainment, IT energy, in simulated time) but does not yet write the `simulate` JSON and report
beside the twin's figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TypeVar

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def add_demo_parser(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    """Register `demo` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the whole loop on a local dev cluster: KEDA, the world, Prometheus, Climatik",
        description=(
            "Start the dev cluster with KEDA, the world playing a scenario's datacenter, a "
            "Prometheus scraping it, one Deployment and ScaledObject per service, a "
            "PowerCappingConfig and the controller; print power against the cap and replicas "
            "against ceilings while the scenario runs; then stop everything."
        ),
    )
    parser.add_argument("--scenario", default="default", help="built-in name or YAML file")
    parser.add_argument("--speed", type=float, default=10.0, help="simulated seconds per second")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall minutes to run")
    parser.add_argument(
        "--start-hour", type=float, default=12.0, help="hour of the scenario to start at"
    )
    parser.add_argument(
        "--dir", type=Path, required=True, help="cluster state, logs and Prometheus data"
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from climatik.demo.progress import progress_line
    from climatik.demo.stack import DemoSettings, running_stack
    from climatik.domain.errors import UserError
    from climatik.sim.scenario import load_scenario

    if args.speed <= 0 or args.minutes <= 0:
        raise UserError("--speed and --minutes must be above 0")
    settings = DemoSettings(
        scenario_name=args.scenario,
        scenario=load_scenario(args.scenario),
        directory=args.dir,
        speed=args.speed,
        minutes=args.minutes,
        start_hour=args.start_hour,
    )
    with running_stack(settings, lambda line: print(line, flush=True)) as stack:
        started = time.monotonic()
        deadline = started + settings.minutes * 60.0
        while (now := time.monotonic()) < deadline:
            print(progress_line(stack.snapshot(now - started)), flush=True)
            time.sleep(min(settings.progress_every_s, max(0.0, deadline - time.monotonic())))
        print(progress_line(stack.snapshot(time.monotonic() - started)), flush=True)
        for line in stack.summary():
            print(line, flush=True)
    return 0
