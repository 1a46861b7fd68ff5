"""Every command fails the same way: one line on stderr, a status that says which kind, no
traceback unless `--debug`.

The kubeconfig and settings cases run the real program in a subprocess (what a user types);
cases that need a long run (Ctrl-C in `simulate`, output paths checked before the run) call
`main` in-process with the twin replaced, so the suite stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from climatik.cli import build_parser, main
from climatik.sim.engine import Twin
from climatik.sources.gpu import GpuError

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: abc}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u, namespace: team}}}}]
current-context: x
"""


def climatik(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "climatik", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def assert_one_line(completed: subprocess.CompletedProcess[str], status: int, line: str) -> None:
    assert "Traceback" not in completed.stderr
    assert completed.stderr.splitlines() == [line]
    assert completed.returncode == status


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment with no kubeconfig anywhere and not inside a pod."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "CLIMATIK_"))}
    env["HOME"] = str(tmp_path)
    return env


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_no_kubeconfig_says_where_it_looked_and_what_to_do(
    home: dict[str, str], tmp_path: Path
) -> None:
    assert_one_line(
        climatik("explain", "cap", env=home),
        2,
        f"climatik explain: no kubeconfig: $KUBECONFIG is not set and {tmp_path}/.kube/config "
        "does not exist; pass --kubeconfig FILE, set KUBECONFIG, or run inside a pod",
    )


def test_a_garbage_kubeconfig_is_named_with_line_and_column(
    home: dict[str, str], tmp_path: Path
) -> None:
    garbage = tmp_path / "config"
    garbage.write_text("clusters: [\n", encoding="utf-8")
    assert_one_line(
        climatik("explain", "cap", "--kubeconfig", str(garbage), env=home),
        2,
        f"climatik explain: kubeconfig is not valid YAML: {garbage}, line 2, column 1: "
        "expected the node content, but found '<stream end>' (while parsing a flow node)",
    )
    garbage.write_text("hello\n", encoding="utf-8")
    assert_one_line(
        climatik("run", "--kubeconfig", str(garbage), env=home),
        2,
        f"climatik run: kubeconfig {garbage} is not a kubeconfig (a YAML mapping with clusters, "
        "users and contexts); point --kubeconfig or KUBECONFIG at the file kubectl uses",
    )


def test_a_kubeconfig_without_a_current_context_says_how_to_pick_one(
    home: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\n", encoding="utf-8")
    assert_one_line(
        climatik("explain", "cap", env={**home, "KUBECONFIG": str(config)}),
        2,
        f"climatik explain: kubeconfig {config} sets no current-context; run `kubectl config "
        "use-context NAME` or `kubectl config get-contexts` to list them",
    )


@pytest.mark.parametrize("command", ["run", "explain"])
def test_an_unreachable_api_server_is_named_and_exits_1(
    command: str, home: dict[str, str], tmp_path: Path, closed_port: int
) -> None:
    server = f"https://127.0.0.1:{closed_port}"
    config = tmp_path / "config"
    config.write_text(KUBECONFIG.format(server=server), encoding="utf-8")
    args = ["run", "--http-port", "0"] if command == "run" else ["explain", "cap"]
    completed = climatik(*args, "--kubeconfig", str(config), env=home)
    assert_one_line(
        completed,
        1,
        f"climatik {command}: cannot reach the Kubernetes API server at {server}: "
        f"Cannot connect to host 127.0.0.1:{closed_port} ssl:default "
        f"[Connect call failed ('127.0.0.1', {closed_port})]; "
        "check that the cluster is running and the kubeconfig's server address",
    )


def test_a_bad_setting_names_its_variable_and_what_it_expects(home: dict[str, str]) -> None:
    assert_one_line(
        climatik("run", env={**home, "CLIMATIK_HTTP__PORT": "abc"}),
        2,
        "climatik run: CLIMATIK_HTTP__PORT='abc': Input should be a valid integer, unable to "
        "parse string as an integer (see `CLIMATIK_*` in docs/configuration.md)",
    )


def test_a_port_out_of_range_is_a_usage_error_before_anything_starts() -> None:
    assert_one_line(
        climatik("run", "--http-port", "99999"),
        2,
        "climatik run: argument --http-port: '99999' is not a TCP port (an integer from 0 to "
        "65535); see `climatik run --help`",
    )


def test_debug_adds_the_traceback_before_the_same_line(home: dict[str, str]) -> None:
    for args in (["--debug", "explain", "cap"], ["explain", "cap", "--debug"]):
        completed = climatik(*args, env=home)
        assert completed.returncode == 2
        assert "Traceback (most recent call last)" in completed.stderr
        assert completed.stderr.splitlines()[-1].startswith("climatik explain: no kubeconfig:")


def test_ctrl_c_in_simulate_exits_130_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Twin, "run", interrupted)
    assert main(["simulate"]) == 130
    assert capsys.readouterr().err.splitlines() == ["climatik simulate: interrupted"]


def start_sweep() -> subprocess.Popen[str]:
    """A simulated sweep of 8 clocks that settles 5 s at each: about 40 s unless stopped."""
    sweep = ["gpu-tune", "--simulate", "1", "--settle-s", "5", "--measure-s", "0"]
    return subprocess.Popen(
        [sys.executable, "-m", "climatik", *sweep],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background (`nohup ... &`) ignores SIGINT, and a child
        # inherits that: Python then installs no KeyboardInterrupt handler and Ctrl-C does
        # nothing. A person's terminal delivers it; so must the test.
        preexec_fn=_default_sigint,  # noqa: PLW1509 (no threads are started before the fork)
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("signum", "status", "line"),
    [
        (signal.SIGINT, 130, "climatik gpu-tune: interrupted"),
        (signal.SIGTERM, 143, "climatik gpu-tune: stopped by SIGTERM; clocks restored"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_mid_sweep_stops_gpu_tune_with_one_line(
    signum: signal.Signals, status: int, line: str
) -> None:
    """A real signal, sent once the sweep has said it started."""
    with start_sweep() as sweep:
        assert sweep.stderr is not None
        assert sweep.stderr.readline().startswith("gpu-tune: measuring 8 clocks")
        sweep.send_signal(signum)
        rest = sweep.stderr.read()
        assert sweep.wait(timeout=30) == status
    assert rest.splitlines() == [line]


def test_a_gpu_error_is_json_on_stdout_and_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Job's log keeps the JSON result; a person at a terminal reads the line."""

    class NoNvml:
        def __enter__(self) -> None:
            raise GpuError("LibraryNotFound", "libnvidia-ml.so is not present")

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr("climatik.sources.gpu.NvmlLibrary", NoNvml)
    assert main(["gpu-tune", "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "error": {"reason": "LibraryNotFound", "message": "libnvidia-ml.so is not present"}
    }
    assert err.splitlines() == [
        "climatik gpu-tune: libnvidia-ml.so is not present (LibraryNotFound)"
    ]


@pytest.fixture
def no_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulation that must not start: output paths are checked before it."""

    def must_not_run(*args: object, **kwargs: object) -> None:
        pytest.fail("the simulation ran before its output paths were checked")

    monkeypatch.setattr(Twin, "run", must_not_run)


@pytest.mark.usefixtures("no_twin")
def test_unwritable_outputs_are_refused_before_the_simulation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n", encoding="utf-8")
    assert main(["simulate", "--report", str(a_file)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"climatik simulate: --report {a_file} is not a directory; give a folder for the report"
    ]
    assert main(["simulate", "--json", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"climatik simulate: --json {tmp_path} is a directory; give a file name"
    ]
    assert a_file.read_text(encoding="utf-8") == "root:x:0:0\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.usefixtures("no_twin")
def test_a_file_system_that_refuses_files_is_found_before_the_simulation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--json", "/proc/x.json"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "climatik simulate: --json /proc/x.json cannot be written (No such file or directory); "
        "choose another path"
    ]


def test_a_writable_json_path_is_left_as_it_was_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check creates the file to prove it can; a run that then fails leaves nothing."""

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(Twin, "run", broken)
    target = tmp_path / "out" / "figures.json"
    assert main(["simulate", "--json", str(target)]) == 2
    assert capsys.readouterr().err.splitlines() == ["climatik simulate: boom"]
    assert not target.exists()


def test_an_unexpected_error_is_one_line_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(Twin, "run", bug)
    assert main(["simulate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "climatik simulate: unexpected ZeroDivisionError: division by zero; "
        "rerun with --debug for the traceback and report it"
    ]


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def test_every_option_and_command_has_help() -> None:
    missing = []
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                # The commands' own lines in the parent's help: `gpu-tune  sweep GPU clocks...`.
                missing += [
                    f"{parser.prog} {c.dest}" for c in action._choices_actions if not c.help
                ]
            elif not action.help:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_gpu_tune_prints_a_line_per_clock_with_the_time_left() -> None:
    completed = climatik(
        "gpu-tune",
        "--simulate",
        "1",
        "--sweep-points",
        "2",
        "--settle-s",
        "0.2",
        "--measure-s",
        "0.2",
    )
    assert completed.returncode == 0
    lines = completed.stderr.splitlines()
    assert lines[0] == "gpu-tune: measuring 2 clocks, 0 s each; about 1 s left"
    assert len(lines) == 3
    assert lines[1].startswith("gpu-tune: clock 1/2: 1980 MHz, ")
    assert lines[1].endswith(" tokens/J; about 0 s left")
    assert lines[2].startswith("gpu-tune: clock 2/2: ")
    assert "left" not in lines[2]


def test_gpu_tune_without_a_throughput_source_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gpu-tune"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "climatik gpu-tune: a sweep needs at least one --vllm-metrics URL "
        "(or --dry-run, or --simulate GPUS)"
    ]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--mode", "lock"], "--mode lock needs --clock-mhz MHZ, the SM clock to lock"),
        (
            ["--mode", "apply", "--clock-mhz", "1400", "--simulate", "1"],
            "--clock-mhz is only for --mode lock (this run is --mode apply)",
        ),
        (
            ["--mode", "lock", "--clock-mhz", "1400", "--dry-run", "--simulate", "1"],
            "--clock-mhz is only for --mode lock (this run is --mode dry-run)",
        ),
        (
            ["--mode", "lock", "--clock-mhz", "0", "--simulate", "1"],
            "--clock-mhz must be a positive number of MHz, not 0",
        ),
    ],
    ids=["lock-without-clock", "clock-without-lock", "clock-with-dry-run", "clock-zero"],
)
def test_gpu_tune_clock_mhz_goes_with_lock_mode_only(
    args: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gpu-tune", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"climatik gpu-tune: {line}"]


def test_gpu_tune_lock_locks_simulated_gpus_without_a_sweep_or_vllm_metrics(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-node-3")
    argv = ["gpu-tune", "--simulate", "2", "--mode", "lock", "--clock-mhz", "1400"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["mode"] == "lock"
    assert document["appliedClockMHz"] == 1395
    assert document["requestedClockMHz"] == 1400
    assert document["samples"] == []
    assert document["node"] == "gpu-node-3"
    assert len(document["gpus"]) == 2
    assert "error" not in document
    assert err == ""


def test_a_topology_yaml_error_names_the_file_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "racks.yaml"
    bad.write_text("racks: [\n", encoding="utf-8")
    assert main(["dev-cluster", "up", "--dir", str(tmp_path / "c"), "--topology", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"climatik dev-cluster: topology is not valid YAML: {bad}, line 2, column 1: "
        "expected the node content, but found '<stream end>' (while parsing a flow node)"
    ]
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--speed", "0"], "climatik world: --speed must be above 0"),
        (
            ["--scenario", "default", "--service", "x=y"],
            "climatik world: --service: scenario 'default' has no service 'y'",
        ),
        (
            ["--scenario", "default", "--kubeconfig", "/nonexistent"],
            "climatik world: kubeconfig /nonexistent does not exist; "
            "pass an existing file to --kubeconfig",
        ),
    ],
)
def test_world_refuses_what_is_wrong_before_it_listens(args: list[str], line: str) -> None:
    completed = climatik("world", "--port", "0", *args)
    assert_one_line(completed, 2, line)
    assert "listening on" not in completed.stdout


def test_demo_refuses_a_bad_speed_before_starting_anything(tmp_path: Path) -> None:
    completed = climatik("demo", "--dir", str(tmp_path / "demo"), "--speed", "-1")
    assert_one_line(completed, 2, "climatik demo: --speed and --minutes must be above 0")
    assert not (tmp_path / "demo").exists()
