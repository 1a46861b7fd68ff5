"""``climatik run``: the controller process (what the Deployment's container runs).

Flags override the ``CLIMATIK_*`` environment for the settings people change most; everything else
is in :mod:`climatik.runtime.settings`. Exit status: 0 after SIGTERM/SIGINT, 1 when leadership was
lost (the Deployment restarts the pod as a fresh standby), 2 when a component crashed.
"""

from __future__ import annotations

import argparse
from typing import Any


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
        "--http-port", type=int, help="port for /metrics, /healthz, /readyz (default 8080)"
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="take part in leader election (default: on); --no-leader-elect for a single replica",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio  # imported here to keep `climatik --help` instant

    from climatik.runtime.controllers import controller_factories
    from climatik.runtime.logging import configure_logging
    from climatik.runtime.manager import run_manager
    from climatik.runtime.settings import RuntimeSettings

    settings = RuntimeSettings()
    if args.kubeconfig is not None:
        settings.kube.kubeconfig = args.kubeconfig
    if args.namespace is not None:
        settings.kube.namespace = args.namespace
    if args.identity is not None:
        settings.leader_election.identity = args.identity
    if args.http_port is not None:
        settings.http.port = args.http_port
    if args.leader_elect is not None:
        settings.leader_election.enabled = args.leader_elect
    configure_logging(settings.logging.level, settings.logging.format)
    factories = controller_factories(settings.extra_controllers)
    return asyncio.run(run_manager(settings, factories))
