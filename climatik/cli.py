"""The `climatik` command line: one argparse program with a subcommand per job.

Subcommands register themselves through small `add_*_parser` functions that import their heavy
machinery only when they run, so `climatik --help` stays instant.

Every command fails the same way: one line on stderr, ``climatik COMMAND: what is wrong; what to
do``, and exit status 2 for a wrong command line or configuration, 1 for a failure outside
(an unreachable server, a file that cannot be written), 130 after Ctrl-C. ``--debug`` adds the
traceback. Errors a user can cause are :class:`~climatik.domain.errors.UserError`; anything else
is a bug, reported in one line too, with a hint to rerun with ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from climatik import __version__
from climatik.api.cli import add_crd_parser
from climatik.demo.cli import add_demo_parser
from climatik.devcluster.cli import add_dev_cluster_parser
from climatik.domain.errors import EXIT_INTERRUPTED, EXIT_RUNTIME_FAILURE, EXIT_USAGE, UserError
from climatik.gputune.cli import add_gpu_tune_parser
from climatik.router.cli import add_router_parser
from climatik.runtime.cli import add_run_parser
from climatik.runtime.explain import add_explain_parser
from climatik.runtime.logging import configure_logging
from climatik.sim.cli import add_simulate_parser
from climatik.world.cli import add_world_parser


class _Parser(argparse.ArgumentParser):
    """argparse with the command line's one-line errors (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (exposed for tests and docs)."""
    parser = _Parser(
        prog="climatik",
        description=(
            "Keep LLM inference on Kubernetes inside power, thermal and carbon budgets. "
            "Run `climatik simulate` to see what it would do in a simulated datacenter."
        ),
    )
    parser.add_argument("--version", action="version", version=f"climatik {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback behind an error (also accepted after the command)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each subcommand module exposes `add_<name>_parser(subparsers)`, which sets `handler`
    # (a callable taking the parsed args and returning an exit status) as a default.
    add_crd_parser(subparsers)
    add_demo_parser(subparsers)
    add_dev_cluster_parser(subparsers)
    add_gpu_tune_parser(subparsers)
    add_explain_parser(subparsers)
    add_router_parser(subparsers)
    add_run_parser(subparsers)
    add_simulate_parser(subparsers)
    add_world_parser(subparsers)
    _accept_debug_everywhere(parser)
    return parser


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser`, nested ones (`dev-cluster up`) included."""
    found: list[argparse.ArgumentParser] = []
    # argparse has no public walk of its subparsers; these two names have been stable for years.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_subcommand_parsers(child)]
    return found


def _accept_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """`climatik simulate --debug` as well as `climatik --debug simulate`; SUPPRESS keeps a
    subcommand's parser from resetting a `--debug` given before the command."""
    for child in _subcommand_parsers(parser):
        child.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the traceback behind an error",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # Every subcommand logs like `run` does until it configures its own: never structlog's
    # default, whose tracebacks print every frame's locals (a header with an API key, say).
    configure_logging()
    try:
        status: int = handler(args)
    except UserError as error:
        return _fail(args, error.exit_status, str(error))
    except KeyboardInterrupt:
        if sys.stderr.isatty():  # end the progress line the terminal's ^C was echoed onto
            print(file=sys.stderr)
        return _fail(args, EXIT_INTERRUPTED, "interrupted")
    except OSError as error:
        # A file or socket the command needed; strerror and filename say which and why.
        where = f"{error.filename}: " if error.filename else ""
        return _fail(args, EXIT_RUNTIME_FAILURE, f"{where}{error.strerror or error}")
    except Exception as error:  # the last stop before a traceback on a terminal
        what = f"unexpected {type(error).__name__}: {error}"
        hint = "rerun with --debug for the traceback and report it"
        return _fail(args, EXIT_RUNTIME_FAILURE, f"{what}; {hint}")
    return status


def _fail(args: argparse.Namespace, status: int, message: str) -> int:
    """Print `message` as the command's one error line (the traceback first with --debug)."""
    if args.debug:
        traceback.print_exc()
    print(f"climatik {args.command}: {message}", file=sys.stderr)
    return status
