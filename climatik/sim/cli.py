"""`climatik simulate`: run the twin on a scenario and compare policies side by side.

With no arguments it runs the built-in `default` scenario with its baseline policies, prints a
summary table on stdout and its progress on stderr (a bar with an ETA on a terminal, a plain
line every 10 % elsewhere). `--json` and `--report` write the figures and plots to files; their
paths are checked before the run, not after it. Errors a user can cause (an unknown scenario, an
invalid field, an unknown policy, an output path that cannot be written) print one clear message
and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from climatik.domain.errors import UserError


def add_simulate_parser(subparsers: Any) -> None:
    """Register `simulate` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run the datacenter twin and compare policies",
        description=(
            "Run the datacenter twin on a scenario and compare power-capping policies side by "
            "side: cap violations, tokens, energy, cooling, inlet temperatures, carbon, SLOs."
        ),
    )
    parser.add_argument(
        "--scenario",
        default="default",
        help="built-in scenario name or a scenario YAML file (default: default)",
    )
    parser.add_argument("--hours", type=float, help="simulate this many hours instead")
    parser.add_argument(
        "--policies", help="comma-separated policies (default: the scenario's list)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write an HTML page with plots into DIR"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help=(
            "override the scenario's seed for power and measurement noise and random placement "
            "(with --routing: arrival times and request lengths)"
        ),
    )
    parser.add_argument(
        "--exact-knowledge",
        action="store_true",
        help=(
            "give the policies what the live controller cannot measure (server idle draw, the "
            "room's heat matrix, exact chassis power and inlets): a labelled what-if variant"
        ),
    )
    parser.add_argument(
        "--exact-placement",
        action="store_true",
        help=(
            "solve the whole-replica placements (the 'cool (whole)' yardstick) exactly as MIPs "
            "where the room is too large to enumerate, not by a greedy search (slower)"
        ),
    )
    parser.add_argument(
        "--routing",
        nargs="?",
        const="hetero-routing",
        metavar="SCENARIO",
        help=(
            "run the request-level routing twin instead: one service's replicas, each request "
            "routed by round-robin, least-loaded and tokens-per-watt (a built-in routing "
            "scenario name or a YAML file; default: hetero-routing)"
        ),
    )
    parser.add_argument(
        "--list", action="store_true", help="list the built-in scenarios and policies, then exit"
    )
    parser.set_defaults(handler=run_simulate)


class OutputPathError(UserError):
    """An output path that cannot be written, found before the run rather than after it."""


def check_output_file(path: Path, flag: str) -> None:
    """Refuse a file the figures could not be written to, by creating it (then removing it
    again if it was not there): permissions, read-only and virtual file systems all answer."""
    if path.is_dir():
        msg = f"{flag} {path} is a directory; give a file name"
        raise OutputPathError(msg)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        msg = f"{flag} {path} cannot be written ({error.strerror}); choose another path"
        raise OutputPathError(msg) from None
    if not existed:
        path.unlink(missing_ok=True)


def check_output_dir(path: Path, flag: str) -> None:
    """Refuse a folder the report could not be written into, by writing a scratch file there."""
    if path.exists() and not path.is_dir():
        msg = f"{flag} {path} is not a directory; give a folder for the report"
        raise OutputPathError(msg)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        msg = f"{flag} {path} cannot be written ({error.strerror}); choose another folder"
        raise OutputPathError(msg) from None


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of `climatik simulate`."""
    from climatik.sim.engine import Twin
    from climatik.sim.policy_specs import POLICY_NAMES
    from climatik.sim.progress import Progress
    from climatik.sim.report import write_html_report
    from climatik.sim.scenario import ScenarioError, builtin_names, load_scenario
    from climatik.sim.scenario_bounds import compute_bounds
    from climatik.sim.shares import compare
    from climatik.sim.summary import summary_table

    if args.list:
        from climatik.sim.routing_scenario import ROUTING_POLICIES, builtin_routing_names

        print("scenarios:", ", ".join(builtin_names()))
        print("policies:", ", ".join(POLICY_NAMES))
        print("routing scenarios:", ", ".join(builtin_routing_names()))
        print("routing policies:", ", ".join(ROUTING_POLICIES))
        return 0
    if args.routing is not None:
        return run_routing_mode(args)
    # Before the run, not after it: the plots need the optional extra.
    if args.report is not None and importlib.util.find_spec("matplotlib") is None:
        print(
            "climatik simulate: --report draws plots with matplotlib, which is not installed: "
            "pip install 'climatik[sim]'",
            file=sys.stderr,
        )
        return 2
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.report is not None:
        check_output_dir(args.report, "--report")
    try:
        scenario = load_scenario(args.scenario)
        policies = None
        if args.policies:
            policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        if args.hours is not None and args.hours <= 0:
            msg = "--hours must be positive"
            raise ScenarioError(msg)
        twin = Twin(
            scenario,
            policies=policies,
            hours=args.hours,
            seed=args.seed,
            exact_knowledge=args.exact_knowledge,
        )
        result = twin.run(progress=Progress(f"simulating {scenario.name}", sys.stderr))
    except (ScenarioError, ValueError) as error:
        print(f"climatik simulate: {error}", file=sys.stderr)
        return 2
    bounds = compute_bounds(scenario, hours=args.hours, exact_placement=args.exact_placement)
    comparison = compare(result, bounds, whole_replica=True)
    print(summary_table(result, comparison))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {**result.as_json(), "bounds": comparison.as_json()}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.report is not None:
        page = write_html_report(result, scenario, args.report, comparison)
        print(f"report written to {page}")
    return 0


def run_routing_mode(args: argparse.Namespace) -> int:
    """`climatik simulate --routing [SCENARIO]`: the routing twin's rows per routing policy."""
    from climatik.sim.routing import run_routing
    from climatik.sim.routing_report import routing_table
    from climatik.sim.routing_scenario import ROUTING_POLICIES, load_routing_scenario
    from climatik.sim.scenario import ScenarioError

    for flag, given in (
        ("--report", args.report is not None),
        ("--exact-knowledge", args.exact_knowledge),
        ("--exact-placement", args.exact_placement),
        ("--scenario", args.scenario != "default"),
    ):
        if given:
            print(
                f"climatik simulate: {flag} is for the fleet twin; --routing takes its own "
                "scenario (--routing NAME|FILE)",
                file=sys.stderr,
            )
            return 2
    if args.json is not None:
        check_output_file(args.json, "--json")
    try:
        scenario = load_routing_scenario(args.routing)
        policies = None
        if args.policies:
            policies = [p.strip() for p in args.policies.split(",") if p.strip()]
            unknown = [p for p in policies if p not in ROUTING_POLICIES]
            if unknown:
                msg = f"unknown routing policy {unknown[0]!r}; known: {', '.join(ROUTING_POLICIES)}"
                raise ScenarioError(msg)
        if args.hours is not None and args.hours <= 0:
            msg = "--hours must be positive"
            raise ScenarioError(msg)
        result = run_routing(scenario, policies, hours=args.hours, seed=args.seed)
    except ScenarioError as error:
        print(f"climatik simulate: {error}", file=sys.stderr)
        return 2
    print(routing_table(result, scenario))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0
