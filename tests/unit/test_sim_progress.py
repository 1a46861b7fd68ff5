"""Progress of a twin run: an ETA on a terminal, a plain line every 10 % off one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from climatik.cli import main
from climatik.sim.progress import Progress, clock_time


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(progress: Progress, clock: _Clock, seconds_per_percent: float) -> None:
    for percent in range(100):
        clock.now += seconds_per_percent
        progress(percent / 100)
    progress(1.0)
    progress(1.0)  # the twin reports the end; a second report adds nothing


def test_off_a_terminal_a_plain_line_every_tenth_with_the_time_left() -> None:
    stream, clock = io.StringIO(), _Clock()
    _run(Progress("simulating default", stream, interactive=False, clock=clock), clock, 1.2)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "simulating default: 10 % after 0:13, ETA 1:59"
    assert [line.split(":")[1].split("%")[0].strip() for line in lines[:-1]] == [
        str(p) for p in range(10, 100, 10)
    ]
    assert lines[-1] == "simulating default: done in 2:00"
    assert len(lines) == 10


def test_on_a_terminal_one_line_redrawn_with_an_eta() -> None:
    stream, clock = io.StringIO(), _Clock()
    _run(Progress("simulating large", stream, interactive=True, clock=clock), clock, 0.5)
    text = stream.getvalue()
    frames = text.split("\r")[1:]
    assert len(frames) == 101  # one per percent, then the end
    assert frames[50].startswith("simulating large [###############...............]  50 %")
    assert frames[50].rstrip().endswith("50 %  0:26 spent, ETA 0:26")
    assert frames[-1].rstrip().endswith("100 %  done in 0:50")
    assert text.endswith("\n")
    assert text.count("\n") == 1


def test_the_cli_reports_progress_on_stderr_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(
        json.dumps(
            {
                "name": "tiny",
                "duration_h": 0.5,
                "racks": {"count": 1, "servers_per_rack": 2},
                "caps": {"site_cap_w": 15000},
                "services": [{"name": "chat", "max_replicas": 2, "traffic": {"peak_rps": 2}}],
                "policies": ["static"],
            }
        ),
        encoding="utf-8",
    )
    assert main(["simulate", "--scenario", str(scenario)]) == 0
    captured = capsys.readouterr()
    progress = captured.err.splitlines()
    assert progress[0].startswith("simulating tiny: 10 % after")
    assert progress[-1].startswith("simulating tiny: done in")
    assert "simulating" not in captured.out


def test_clock_time() -> None:
    assert clock_time(0) == "0:00"
    assert clock_time(61.4) == "1:01"
    assert clock_time(3725) == "1:02:05"
