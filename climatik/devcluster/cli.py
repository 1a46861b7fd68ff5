"""`climatik dev-cluster up|down`: the command-line face of the dev cluster.

Errors a user can cause print what to fix, never a traceback: a bad topology file exits 2;
binaries not built or a component that will not start exit 1, with that component's log tail.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any


def add_dev_cluster_parser(subparsers: Any) -> None:
    """Register `dev-cluster` with its `up` and `down` subcommands."""
    parser = subparsers.add_parser(
        "dev-cluster",
        help="run a real local Kubernetes control plane with simulated GPU nodes",
        description=(
            "Start or stop etcd, kube-apiserver, kube-controller-manager, kube-scheduler and "
            "kwok on 127.0.0.1, built by hack/control-plane/build.sh."
        ),
    )
    actions = parser.add_subparsers(dest="dev_cluster_command", metavar="ACTION", required=True)
    up_parser = actions.add_parser("up", help="start a cluster and wait until it is ready")
    up_parser.add_argument("--dir", type=Path, required=True, help="state, logs and kubeconfig")
    up_parser.add_argument(
        "--topology",
        type=Path,
        default=None,
        help="racks YAML (default: 2 racks x 4 nodes x 8 GPUs)",
    )
    up_parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for readiness"
    )
    up_parser.add_argument(
        "--with",
        dest="addons",
        type=_addons,
        default=(),
        metavar="ADDONS",
        help="also run these, comma-separated: keda (KEDA's operator and metrics adapter), "
        "kserve (KServe's controller), vpa (VPA's recommender, updater and admission "
        "controller, with metrics-server); build them with "
        "`hack/control-plane/build.sh --with keda,kserve,vpa`",
    )
    up_parser.set_defaults(handler=_run_up)
    down_parser = actions.add_parser("down", help="stop every process the cluster started")
    down_parser.add_argument(
        "--dir", type=Path, required=True, help="the folder given to `up` (its state file)"
    )
    down_parser.set_defaults(handler=_run_down)


def _addons(text: str) -> tuple[str, ...]:
    from climatik.devcluster.addons import parse_addons

    try:
        return parse_addons(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run_up(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("cryptography") is None:
        print(
            "dev-cluster up failed: it mints certificates with cryptography, which is not "
            "installed: pip install 'climatik[dev]'",
            file=sys.stderr,
        )
        return 1
    # Imported here so `climatik --help` does not load cryptography.
    from climatik.devcluster.binaries import BinariesMissingError
    from climatik.devcluster.cluster import DevClusterError, up
    from climatik.devcluster.topology import load_topology

    started = time.monotonic()
    topology = load_topology(args.topology)  # a TopologyError is a usage error: exit 2
    try:
        info = up(args.dir, topology, addons=args.addons, timeout_s=args.timeout, progress=print)
    except (BinariesMissingError, DevClusterError) as exc:
        print(f"climatik dev-cluster: up failed: {exc}", file=sys.stderr)
        return 1
    nodes = sum(len(n) for n in info.nodes_by_rack.values())
    with_addons = f", with {', '.join(info.addons)}" if info.addons else ""
    print(
        f"dev cluster ready in {time.monotonic() - started:.1f}s: {info.api_url}, "
        f"{nodes} kwok nodes in {len(info.nodes_by_rack)} racks ({info.rack_label_key})"
        f"{with_addons}\n"
        f"export KUBECONFIG={info.kubeconfig}\n"
        f"kubectl: {info.kubectl}\nlogs: {info.logs_dir}"
    )
    return 0


def _run_down(args: argparse.Namespace) -> int:
    from climatik.devcluster.cluster import DevClusterError, down

    started = time.monotonic()
    try:
        stopped = down(args.dir)
    except DevClusterError as exc:
        print(f"climatik dev-cluster: down failed: {exc}", file=sys.stderr)
        return 1
    if stopped:
        print(f"stopped {', '.join(stopped)} in {time.monotonic() - started:.1f}s")
    else:
        print(f"no running dev cluster in {args.dir}")
    return 0
