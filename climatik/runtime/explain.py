"""`climatik explain PCC [-n NS]`: read one PowerCappingConfig and explain its last decision."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def add_explain_parser(subparsers: Any) -> None:
    """Register `climatik explain`."""
    parser = subparsers.add_parser(
        "explain",
        help="explain a PowerCappingConfig's last decision in plain words",
        description="Print the last decision of a PowerCappingConfig, its inputs and why.",
    )
    parser.add_argument("name", help="the PowerCappingConfig's name")
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="the config's namespace (default: the kubeconfig context's, else `default`)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="path to a kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_explain(args))


async def _explain(args: argparse.Namespace) -> int:
    from climatik.api.explain import explain  # noqa: PLC0415 - keep --help instant
    from climatik.kube.client import ApiError, KubeClient  # noqa: PLC0415
    from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS  # noqa: PLC0415

    client = await KubeClient.from_config(args.kubeconfig)
    namespace = args.namespace or client.default_namespace
    try:
        await client.check_reachable()
        obj = await client.get(POWER_CAPPING_CONFIGS, args.name, namespace)
    except ApiError as error:
        message = error.message or str(error)
        details = error.body.get("details") or {}
        if error.is_not_found and details.get("name") == args.name:
            message = (
                f"no PowerCappingConfig {args.name!r} in namespace {namespace!r}; "
                "`kubectl get pcc -A` lists them"
            )
        elif error.is_not_found:  # the resource itself is unknown to the server
            message = (
                "this cluster has no PowerCappingConfig CRD; "
                "install it with `climatik crd | kubectl apply -f -`"
            )
        print(f"climatik explain: {message}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    sys.stdout.write(explain(obj))
    return 0
