"""The summary the docs quote is the one `climatik simulate` prints today.

docs/simulate.md quotes the whole stdout of `climatik simulate` on `default` and the README its
first table; both drift silently when the layout or the twin changes, so they are compared
line for line with a fresh run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from climatik.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _blocks(path: Path) -> list[str]:
    """The contents of the fenced code blocks of a Markdown file."""
    blocks: list[str] = []
    inside: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("```"):
            if inside is None:
                inside = []
            else:
                blocks.append("".join(inside))
                inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


def test_the_quoted_default_summary_is_what_the_code_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate"]) == 0
    printed = capsys.readouterr().out
    docs = [b for b in _blocks(ROOT / "docs" / "simulate.md") if b.startswith("scenario default")]
    assert docs == [printed]
    readme = [b for b in _blocks(ROOT / "README.md") if b.startswith("cap and heat")]
    assert len(readme) == 1
    assert readme[0] in printed
