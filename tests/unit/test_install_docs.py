"""The install commands in the README and docs/install.md never pull the placeholder image.

No image is published: `ghcr.io/climatik-project/climatik` in the installers is a name for an
overlay or Helm values to replace. A command that installs without replacing it (the kustomize
base applied as is, a Helm install without `image.repository`) would leave ImagePullBackOff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "install.md"]


def _commands(text: str) -> list[str]:
    """Shell lines of the fenced bash blocks, `\\` continuations joined, comments dropped."""
    commands: list[str] = []
    in_bash = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if not in_bash:
            continue
        code = line.split(" #", 1)[0].strip()
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        if pending + code:
            commands.append(pending + code)
        pending = ""
    return commands


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_installs_follow_an_image_build_and_name_the_image(doc: Path) -> None:
    commands = _commands(doc.read_text(encoding="utf-8"))
    installs = [
        i for i, c in enumerate(commands) if c.startswith(("helm install", "kubectl apply -k"))
    ]
    assert installs, f"{doc.name} shows no install command"
    builds = [i for i, c in enumerate(commands) if "build -f Containerfile" in c]
    assert builds, f"{doc.name} never builds the image"
    assert min(builds) < min(installs), f"{doc.name} installs before building the image"
    for i in installs:
        command = commands[i]
        assert "kubectl apply -k deploy/base" not in command, command
        if command.startswith("helm install"):
            assert "image.repository=" in command, command
