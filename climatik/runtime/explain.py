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
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--kubeconfig", default=None)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_explain(args))


async def _explain(args: argparse.Namespace) -> int:
    from climatik.api.explain import explain  # noqa: PLC0415 - keep --help instant
    from climatik.kube.client import ApiError, KubeClient  # noqa: PLC0415
    from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS  # noqa: PLC0415

    client = await KubeClient.from_config(args.kubeconfig)
    try:
        obj = await client.get(POWER_CAPPING_CONFIGS, args.name, args.namespace)
    except ApiError as error:
        print(f"climatik explain: {error.message or error}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    sys.stdout.write(explain(obj))
    return 0
