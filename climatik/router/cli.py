"""`climatik router`: the tokens-per-watt OpenAI-compatible proxy (what its Deployment runs).

Flags override the `CLIMATIK_ROUTER__*` environment for the settings people change most; the
rest are in `climatik.router.settings` and docs/router.md. Exit status: 0 after SIGTERM/SIGINT,
1 when a background task (discovery, score refresh) ended, 2 for a bad setting.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_router_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "router",
        help="run the tokens-per-watt router (an OpenAI-compatible reverse proxy)",
        description=(
            "Proxy /v1/completions, /v1/chat/completions and /v1/models to the endpoints of a "
            "Service (from its EndpointSlices), sending each request to the endpoint with the "
            "most tokens per joule that has room in its batch."
        ),
    )
    parser.add_argument("--service", help="the model servers' Service (CLIMATIK_ROUTER__SERVICE)")
    parser.add_argument("--namespace", help="the Service's namespace (default: the pod's own)")
    parser.add_argument("--kubeconfig", help="path to a kubeconfig (default: in-cluster)")
    parser.add_argument("--port", type=int, help="the proxy's port (default 8000)")
    parser.add_argument(
        "--metrics-port", type=int, help="port for /metrics, /healthz, /readyz (default 8080)"
    )
    parser.add_argument("--prometheus", help="Prometheus address for tokens per joule")
    parser.add_argument(
        "--ext-proc-port",
        type=int,
        help="also serve the Envoy ext_proc Endpoint Picker on this port (docs/router-extproc.md)",
    )
    parser.set_defaults(handler=_run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "service": args.service,
        "namespace": args.namespace,
        "kubeconfig": args.kubeconfig,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "ext_proc_port": args.ext_proc_port,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.prometheus is not None:
        overrides["prometheus"] = {"address": args.prometheus}
    return overrides


def _run(args: argparse.Namespace) -> int:
    import asyncio  # imported here to keep `climatik --help` instant

    from climatik.router.server import run_router
    from climatik.router.settings import load_router_settings

    return asyncio.run(run_router(load_router_settings(**_overrides(args))))
