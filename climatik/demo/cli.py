"""`climatik demo`: bring the whole loop up on the dev cluster, run a scenario compressed in
time while printing progress, take everything down, then set the live run beside the twin's
run of the same scenario, policy and window: `simulate`'s table, and with `--json`/`--report`
its JSON and HTML report, with a `live` row.

With `--step` the scenario's demand steps between its trough and 1.5 x its peak every
`--step-minutes` of simulated time and the cap is set 30 % below the high level's uncapped
power (`demo.step`): the reaction time to each step up and the ceilings' changes are measured.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from climatik.demo.compare import LiveSample
    from climatik.sim.scenario import Scenario

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

SAMPLE_EVERY_S = 1.0
"""How often the loop samples power, replicas and ceilings (the reaction time's resolution)."""
KEDA_POLLING_S = 5.0


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`timeout`, a CI runner, `kill`) stops the demo like Ctrl-C: the stack's
    `finally` takes the cluster and every process down. Python's own SIGTERM ends the process
    at once and left a dozen components running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_demo_parser(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    """Register `demo` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the whole loop on a local dev cluster: KEDA, the world, Prometheus, Climatik",
        description=(
            "Start the dev cluster with KEDA, the world playing a scenario's datacenter, a "
            "Prometheus scraping it, one Deployment and ScaledObject per service, a "
            "PowerCappingConfig and the controller; print power against the cap and replicas "
            "against ceilings while the scenario runs; stop everything; then print the live "
            "figures beside the twin's for the same window."
        ),
    )
    parser.add_argument("--scenario", default="default", help="built-in name or YAML file")
    parser.add_argument("--speed", type=float, default=10.0, help="simulated seconds per second")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall minutes to run")
    parser.add_argument(
        "--start-hour", type=float, default=12.0, help="hour of the scenario to start at"
    )
    parser.add_argument(
        "--dir", type=Path, required=True, help="cluster state, logs and Prometheus data"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write an HTML page with plots into DIR"
    )
    parser.add_argument(
        "--step",
        action="store_true",
        help="step demand between trough and 1.5 x peak, the cap 30 %% under the high level",
    )
    parser.add_argument(
        "--step-minutes",
        type=float,
        default=20.0,
        help="simulated minutes of each low and high phase with --step (default: 20)",
    )
    parser.add_argument(
        "--kserve",
        action="store_true",
        help="one KServe InferenceService per service (dev cluster --with keda,kserve)",
    )
    parser.add_argument(
        "--gpu-tuning",
        choices=["Disabled", "Recommend", "Apply"],
        default="Disabled",
        help=(
            "the config's spec.gpuTuning.mode: tuning Jobs sweep a node's SM clocks near the cap "
            "(the world plays them on the twin's GPUs); Apply keeps the best clock, and the "
            "twin beside it runs every service at its tuned clock (default: Disabled)"
        ),
    )
    parser.add_argument(
        "--clocks-under-cap",
        action="store_true",
        help=(
            "with --gpu-tuning Apply: spec.gpuTuning.clocksUnderCap, the controller also moves "
            "each service's clock with its replicas under the cap (lock Jobs the world plays)"
        ),
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from climatik.demo.compare import (
        TWIN_POLICY,
        TWIN_POLICY_JOINT_CLOCKS,
        TWIN_POLICY_TUNED,
        json_document,
        run_twin,
        with_live,
    )
    from climatik.demo.progress import progress_line
    from climatik.demo.stack import DemoSettings, running_stack
    from climatik.domain.errors import UserError
    from climatik.sim.cli import check_output_dir, check_output_file
    from climatik.sim.report import write_html_report
    from climatik.sim.scenario import load_scenario
    from climatik.sim.summary import summary_table

    if args.speed <= 0 or args.minutes <= 0:
        raise UserError("--speed and --minutes must be above 0")
    if args.step_minutes <= 0:
        raise UserError("--step-minutes must be above 0")
    if args.clocks_under_cap and args.gpu_tuning != "Apply":
        raise UserError("--clocks-under-cap needs --gpu-tuning Apply (the clocks are locked)")
    if args.report is not None and importlib.util.find_spec("matplotlib") is None:
        raise UserError("--report draws plots with matplotlib: pip install 'climatik[sim]'")
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.report is not None:
        check_output_dir(args.report, "--report")
    scenario_name = args.scenario
    scenario = load_scenario(scenario_name)
    steps_h: list[float] = []
    if args.step:
        scenario_name, steps_h = _step_scenario(args, scenario)
        scenario = load_scenario(scenario_name)
        print(f"step scenario: {scenario_name}, cap {scenario.caps.site_cap_w / 1000:.1f} kW")
    settings = DemoSettings(
        scenario_name=scenario_name,
        scenario=scenario,
        directory=args.dir,
        speed=args.speed,
        minutes=args.minutes,
        start_hour=args.start_hour,
        kserve=args.kserve,
        gpu_tuning=args.gpu_tuning,
        clocks_under_cap=args.clocks_under_cap,
    )
    samples: list[LiveSample] = []
    with (
        sigterm_as_interrupt(),
        running_stack(settings, lambda line: print(line, flush=True)) as stack,
    ):
        started = time.monotonic()
        deadline = started + settings.minutes * 60.0
        next_line = started
        while (now := time.monotonic()) < deadline:
            snap = stack.snapshot(now - started)
            if (sample := stack.sample(snap)) is not None:
                samples.append(sample)
            if now >= next_line:
                print(progress_line(snap), flush=True)
                next_line += settings.progress_every_s
            time.sleep(max(0.0, min(SAMPLE_EVERY_S, deadline - time.monotonic())))
        print(progress_line(stack.snapshot(time.monotonic() - started)), flush=True)
        for line in stack.summary():
            print(line, flush=True)
        totals = stack.totals()
        control_s = stack.control_interval_s
    if totals is None:
        print("climatik demo: the world reported no figures; nothing to compare", file=sys.stderr)
        return 1
    # Kept before any figure is derived, so a run is never lost to a failure after it.
    raw = args.dir / "live-samples.json"
    raw.write_text(
        json.dumps({"totals": asdict(totals), "samples": [asdict(x) for x in samples]}),
        encoding="utf-8",
    )
    print(f"running the twin on the same window ({totals.simulated_s / 3600:.2f} h) ...")
    policy = TWIN_POLICY_TUNED if args.gpu_tuning == "Apply" else TWIN_POLICY
    policy = TWIN_POLICY_JOINT_CLOCKS if args.clocks_under_cap else policy
    twin = run_twin(scenario, args.start_hour, totals.simulated_s, policy)
    details = _stability(samples, steps_h, args.start_hour, twin.site_cap_w, totals.simulated_s)
    details["reaction_budget_s"] = 2 * control_s + KEDA_POLLING_S
    result = with_live(twin, totals, samples, details)
    print(summary_table(result))
    for line in _stability_lines(details):
        print(line)
    if args.json is not None:
        window = {
            "start_hour": args.start_hour,
            "simulated_s": totals.simulated_s,
            "speed": args.speed,
            "wall_minutes": args.minutes,
        }
        document = json_document(result, window)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.report is not None:
        page = write_html_report(result, scenario, args.report)
        print(f"report written to {page}")
    return 0


def _step_scenario(args: argparse.Namespace, scenario: Scenario) -> tuple[str, list[float]]:
    from importlib import resources

    from climatik.demo.step import write_step_scenario
    from climatik.sim.scenario import BUILTIN_FOLDER, BUILTIN_PACKAGE

    path = Path(args.scenario)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        folder = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_FOLDER)
        text = folder.joinpath(f"{args.scenario}.yaml").read_text(encoding="utf-8")
    written, steps_h = write_step_scenario(
        scenario,
        text,
        args.dir.resolve() / "step-scenario",
        start_hour=args.start_hour,
        phase_h=args.step_minutes / 60.0,
    )
    return str(written), steps_h


def _stability(
    samples: Sequence[LiveSample],
    steps_h: Sequence[float],
    start_hour: float,
    cap_w: float,
    simulated_s: float,
) -> dict[str, object]:
    """Reaction times to the steps (wall seconds) and ceiling changes and flaps per hour."""
    from climatik.demo.stability import ceiling_activity, percentile, reactions
    from climatik.demo.step import wall_times

    steps_wall = wall_times(steps_h, start_hour, [(s.wall_s, s.simulated_s) for s in samples])
    found = reactions([(s.wall_s, s.site_w) for s in samples], cap_w, steps_wall)
    seconds = [r.seconds for r in found if r.seconds is not None]
    names = sorted({name for s in samples for name in s.ceilings})
    ceilings = {n: [s.ceilings[n] for s in samples if n in s.ceilings] for n in names}
    return {
        "reaction_s": seconds,
        "reaction_unresolved": sum(1 for r in found if r.seconds is None),
        "reaction_p50_s": percentile(seconds, 50),
        "reaction_p95_s": percentile(seconds, 95),
        "ceilings": {
            name: {"changes_per_h": a.changes_per_h, "flaps_per_h": a.flaps_per_h}
            for name, a in ceiling_activity(ceilings, simulated_s).items()
        },
    }


def _stability_lines(details: dict[str, object]) -> list[str]:
    lines = []
    seconds = details["reaction_s"]
    if isinstance(seconds, list) and seconds:
        lines.append(
            f"reaction to {len(seconds)} demand steps: p50 {details['reaction_p50_s']:.0f} s, "
            f"p95 {details['reaction_p95_s']:.0f} s (wall; budget "
            f"{details['reaction_budget_s']:.0f} s: two control periods + one KEDA poll)"
            + (
                f", {details['reaction_unresolved']} still over the cap at the end"
                if details["reaction_unresolved"]
                else ""
            )
        )
    ceilings = details["ceilings"]
    if isinstance(ceilings, dict):
        for name, figures in sorted(ceilings.items()):
            lines.append(
                f"{name}: ceiling changes {figures['changes_per_h']:.1f}/h, "
                f"flaps (up-down-up) {figures['flaps_per_h']:.1f}/h (simulated hours)"
            )
    return lines
