"""`climatik world`: serve the datacenter's metrics for the pods that exist.

With `--scenario` it plays the datacenter for the cluster's inference pods (``driver.py``): the
scenario's demand, compressed `--speed` times, served by the pods that are really there. Without
it, it is the controllable scrape target the integration tests set through its control
endpoints (``control.py``); the endpoints answer in both modes. The first line on stdout is
`listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from climatik.kube.client import KubeClient
    from climatik.sim.scenario import Scenario
    from climatik.world.driver import WorldSettings
    from climatik.world.readings import Readings

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

DESCRIPTION = (
    "Serve Kepler, DCGM, vLLM and inlet-temperature metrics from one scrape target: computed "
    "with the twin's physics for the cluster's inference pods (--scenario), or values set "
    "through its JSON control endpoints."
)


def add_world_parser(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    """Register `world` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "world", help="play the datacenter: serve its metrics", description=DESCRIPTION
    )
    _add_arguments(parser)
    parser.set_defaults(handler=run_world)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9400, help="0 picks a free port")
    parser.add_argument(
        "--scenario",
        help="play this scenario (built-in name or YAML file) for the cluster's pods",
    )
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)"
    )
    parser.add_argument(
        "--start-hour", type=float, default=0.0, help="hour of the scenario to start at"
    )
    parser.add_argument("--namespace", help="only pods in this namespace (default: all)")
    parser.add_argument("--selector", help="only pods matching this label selector")
    parser.add_argument(
        "--rack-label", default="climatik-project.ai/rack", help="the nodes' rack label key"
    )
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=SCENARIO_SERVICE",
        help="drive the cluster's service NAME with a scenario service's demand (repeatable; "
        "by default a namesake, else the next free scenario service)",
    )


def run_world(args: argparse.Namespace) -> int:
    """Check everything a user can get wrong before listening, then serve until signalled."""
    from climatik.domain.errors import UserError

    if args.speed <= 0:
        raise UserError("--speed must be above 0")
    for mapping in args.service:
        if "=" not in mapping:
            raise UserError(f"--service {mapping!r}: expected NAME=SCENARIO_SERVICE")
    settings = None
    if args.scenario is not None:
        from climatik.sim.scenario import load_scenario
        from climatik.world.driver import WorldSettings

        scenario = load_scenario(args.scenario)
        settings = WorldSettings(
            speed=args.speed,
            start_hour=args.start_hour,
            rack_label_key=args.rack_label,
            pod_selector=args.selector,
            namespace=args.namespace,
            services=dict(m.split("=", 1) for m in args.service),
        )
        unknown = sorted(set(settings.services.values()) - {s.name for s in scenario.services})
        if unknown:
            msg = f"--service: scenario {scenario.name!r} has no service {unknown[0]!r}"
            raise UserError(msg)
        asyncio.run(_serve(args, (scenario, settings)))
    else:
        asyncio.run(_serve(args, None))
    return 0


async def _serve(args: argparse.Namespace, driven: tuple[Scenario, WorldSettings] | None) -> None:
    # Imported here so `climatik --help` does not load aiohttp.
    from climatik.kube.client import KubeClient
    from climatik.world.control import build_app
    from climatik.world.readings import Readings
    from climatik.world.server import serving, until_signalled

    # The kubeconfig is read before listening: a wrong one fails before anyone scrapes.
    client = await KubeClient.from_config(args.kubeconfig) if driven is not None else None
    try:
        readings = Readings()
        async with serving(build_app(readings), args.host, args.port) as url:
            print(f"listening on {url}", flush=True)
            if client is None or driven is None:
                await until_signalled()
            else:
                await _drive(client, readings, *driven)
    finally:
        if client is not None:
            await client.close()


async def _drive(
    client: KubeClient, readings: Readings, scenario: Scenario, settings: WorldSettings
) -> None:
    from climatik.world.driver import WorldLoop
    from climatik.world.server import until_signalled

    loop = WorldLoop(scenario, readings, settings)
    running = asyncio.create_task(loop.run(client), name="world")
    stop = asyncio.create_task(until_signalled(), name="world-signals")
    done, _ = await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
    for task in (running, stop):
        task.cancel()
    await asyncio.gather(running, stop, return_exceptions=True)
    if running in done:
        running.result()  # a crashed loop is an error, not a quiet exit


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m climatik.world`: the same as `climatik world`, without the CLI's imports."""
    parser = argparse.ArgumentParser(prog="python -m climatik.world", description=DESCRIPTION)
    _add_arguments(parser)
    return run_world(parser.parse_args(argv))
