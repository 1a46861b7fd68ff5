"""Writes the Helm chart's README.md from its values.yaml, so the table of values cannot drift.

The comment lines directly above a key (no blank line between) are its description, as
helm-docs reads them (a leading `-- ` is dropped); the default is the value in values.yaml. Keys
whose value is a map get a row only when commented; their children get their own rows. The
prose around the table is README.tmpl.md in the chart, with `@VALUES@` where the table goes.

Usage: python hack/chart_readme.py [--chart DIR]          write DIR/README.md
       python hack/chart_readme.py [--chart DIR] --check  exit 1 when README.md is stale
tests/unit/test_chart_readme.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "climatik"
MARKER = "@VALUES@"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_MISSING = object()


def _lookup(values: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return _MISSING
        values = values[key]
    return values


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "map"}[
        type(value)
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def value_rows(values_text: str) -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every documented key, in file order."""
    values = yaml.safe_load(values_text)
    rows: list[tuple[str, str, str, str]] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    skip_deeper_than: int | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if not stripped or indent > skip_deeper_than:
                continue  # inside a list or a map value already shown as one default
            skip_deeper_than = None
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip().removeprefix("-- "))
            continue
        match = _KEY.match(line)
        if not match:
            comment = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        path = [key for _, key in stack]
        value = _lookup(values, path)
        description = _cell(" ".join(comment))
        comment = []
        if value is _MISSING:
            continue
        inline = line[match.end() :].split("#", 1)[0].strip()  # a flow-style `{...}` value
        if isinstance(value, dict) and value and not inline:
            if description:
                rows.append((".".join(path), "map", "", description))
            continue
        default = _cell(json.dumps(value, separators=(", ", ": ")))
        rows.append((".".join(path), _type_of(value), f"`{default}`", description))
        skip_deeper_than = indent
    return rows


def render(chart: Path) -> str:
    rows = value_rows((chart / "values.yaml").read_text(encoding="utf-8"))
    table = ["| key | type | default | description |", "|---|---|---|---|"]
    table += [f"| `{key}` | {kind} | {default} | {text} |" for key, kind, default, text in rows]
    template = (chart / "README.tmpl.md").read_text(encoding="utf-8")
    if template.count(MARKER) != 1:
        msg = f"{chart / 'README.tmpl.md'} must contain {MARKER} exactly once"
        raise SystemExit(msg)
    return template.replace(MARKER, "\n".join(table))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART)
    parser.add_argument("--check", action="store_true", help="fail when README.md is stale")
    args = parser.parse_args(argv)
    readme = args.chart / "README.md"
    text = render(args.chart)
    if args.check:
        if not readme.is_file() or readme.read_text(encoding="utf-8") != text:
            print(f"{readme} is stale: run `python hack/chart_readme.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
