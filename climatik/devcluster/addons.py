"""The add-ons `climatik dev-cluster up --with NAMES` can run beside the control plane.

Kept apart from `cluster` so the command line checks the names without importing what starts
them (cryptography, YAML), which `climatik --help` and a bad argument should never need.
"""

from __future__ import annotations

ADDONS = ("keda", "kserve", "vpa")


def parse_addons(text: str) -> tuple[str, ...]:
    """A comma-separated list of add-on names (`keda,vpa`), checked, in ADDONS order."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(ADDONS))
    if unknown:
        raise ValueError(f"unknown add-on {', '.join(unknown)}; known add-ons: {', '.join(ADDONS)}")
    return tuple(a for a in ADDONS if a in names)
