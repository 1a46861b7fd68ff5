"""The `climatik` command line: one argparse program with a subcommand per job.

Subcommands register themselves through small `add_*_parser` functions that import their heavy
machinery only when they run, so `climatik --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from climatik import __version__
from climatik.api.cli import add_crd_parser
from climatik.devcluster.cli import add_dev_cluster_parser
from climatik.gputune.cli import add_gpu_tune_parser
from climatik.runtime.cli import add_run_parser
from climatik.runtime.explain import add_explain_parser
from climatik.runtime.logging import configure_logging
from climatik.sim.cli import add_simulate_parser


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="climatik",
        description=(
            "Keep LLM inference on Kubernetes inside power, thermal and carbon budgets. "
            "Run `climatik simulate` to see what it would do in a simulated datacenter."
        ),
    )
    parser.add_argument("--version", action="version", version=f"climatik {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each subcommand module exposes `add_<name>_parser(subparsers)`, which sets `handler`
    # (a callable taking the parsed args and returning an exit status) as a default.
    add_crd_parser(subparsers)
    add_dev_cluster_parser(subparsers)
    add_gpu_tune_parser(subparsers)
    add_explain_parser(subparsers)
    add_run_parser(subparsers)
    add_simulate_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    # Every subcommand logs like `run` does until it configures its own: never structlog's
    # default, whose tracebacks print every frame's locals (a header with an API key, say).
    configure_logging()
    status: int = handler(args)
    return status
