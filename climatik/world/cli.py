"""`climatik world`: serve the datacenter's metrics for the pods that exist.

Without a kubeconfig it is the controllable scrape target the integration tests drive through
its control endpoints (see ``control.py``). The first line on stdout is
`listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import TypeVar

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

DESCRIPTION = (
    "Serve Kepler, DCGM, vLLM and inlet-temperature metrics from one scrape target: values set "
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


def run_world(args: argparse.Namespace) -> int:
    asyncio.run(_serve(args))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    # Imported here so `climatik --help` does not load aiohttp.
    from climatik.world.control import build_app
    from climatik.world.readings import Readings
    from climatik.world.server import serving, until_signalled

    readings = Readings()
    async with serving(build_app(readings), args.host, args.port) as url:
        print(f"listening on {url}", flush=True)
        await until_signalled()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m climatik.world`: the same as `climatik world`, without the CLI's imports."""
    parser = argparse.ArgumentParser(prog="python -m climatik.world", description=DESCRIPTION)
    _add_arguments(parser)
    return run_world(parser.parse_args(argv))
