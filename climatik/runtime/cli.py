"""``climatik run``: the controller process (what the Deployment's container runs).

Flags override the ``CLIMATIK_*`` environment for the settings people change most; everything else
is in :mod:`climatik.runtime.settings`. Exit status: 0 after SIGTERM/SIGINT, 1 when leadership was
lost (the Deployment restarts the pod as a fresh standby), 2 when a component crashed.
"""

from __future__ import annotations

import argparse
from typing import Any

MAX_PORT = 65535


def add_run_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the controller (informers, leader election, reconcilers, /metrics)",
        description=(
            "Run the Climatik controller against the cluster of the current kubeconfig (or the "
            "in-cluster service account). Several replicas elect one leader through a Lease."
        ),
    )
    parser.add_argument(
        "--kubeconfig", help="path to a kubeconfig (default: $KUBECONFIG, then in-cluster)"
    )
    parser.add_argument("--namespace", help="watch only this namespace (default: all namespaces)")
    parser.add_argument(
        "--identity", help="leader-election identity (default: <hostname>_<random>)"
    )
    parser.add_argument(
        "--http-port",
        type=tcp_port,
        help="port for /metrics, /healthz, /readyz (default 8080; 0 picks a free one)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="take part in leader election (default: on); --no-leader-elect for a single replica",
    )
    parser.set_defaults(handler=_run)


def tcp_port(text: str) -> int:
    """argparse type of a TCP port: refused with the range at parse time, not at bind time."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= MAX_PORT:
        msg = f"{text!r} is not a TCP port (an integer from 0 to {MAX_PORT})"
        raise argparse.ArgumentTypeError(msg)
    return port


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags given, as settings groups layered over the ``CLIMATIK_*`` environment."""
    flags = {
        ("kube", "kubeconfig"): args.kubeconfig,
        ("kube", "namespace"): args.namespace,
        ("leader_election", "identity"): args.identity,
        ("http", "port"): args.http_port,
        ("leader_election", "enabled"): args.leader_elect,
    }
    groups: dict[str, dict[str, Any]] = {}
    for (group, field), value in flags.items():
        if value is not None:
            groups.setdefault(group, {})[field] = value
    return groups


def _run(args: argparse.Namespace) -> int:
    import asyncio  # imported here to keep `climatik --help` instant

    from climatik.runtime.controllers import controller_factories
    from climatik.runtime.logging import configure_logging
    from climatik.runtime.manager import run_manager
    from climatik.runtime.settings import load_controller_settings, load_settings

    settings = load_settings(**_overrides(args))
    configure_logging(settings.logging.level, settings.logging.format)
    # Read once, here, and passed down: no factory reads the environment.
    controllers = load_controller_settings()
    factories = controller_factories(controllers, settings.extra_controllers)
    return asyncio.run(run_manager(settings, factories, controller_settings=controllers))
