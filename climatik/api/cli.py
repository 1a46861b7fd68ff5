"""`climatik crd`: print the PowerCappingConfig CRD generated from the pydantic models.

The committed `crd/` file is this command's output; regenerate it with
`climatik crd -o crd/powercapping.climatik-project.ai_powercappingconfigs.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_crd_parser(subparsers: Any) -> None:
    """Register the `crd` subcommand on the top-level parser's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "crd",
        help="print the PowerCappingConfig CustomResourceDefinition (YAML)",
        description="Print the PowerCappingConfig CRD generated from Climatik's API models.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="write to this file instead of standard output",
    )
    parser.set_defaults(handler=_run_crd)


def _run_crd(args: argparse.Namespace) -> int:
    from climatik.api.crd import render_crd_yaml

    text = render_crd_yaml()
    output: Path | None = args.output
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0
