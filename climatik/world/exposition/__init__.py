"""The exposition of every exporter family the world plays, one module per exporter's format.

`render` is what a scrape of `/metrics/<family>` answers; it first brings the counters up to
the moment of the scrape.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Final

from climatik.world.exposition.dcgm import render_dcgm
from climatik.world.exposition.ipmi import render_ipmi
from climatik.world.exposition.kepler import render_kepler
from climatik.world.exposition.kepler07 import render_kepler07
from climatik.world.exposition.text import CONTENT_TYPE, Scrape
from climatik.world.exposition.vllm import render_vllm
from climatik.world.exposition.world import render_world
from climatik.world.readings import PodReadings, Readings

FAMILIES: Final = ("kepler", "kepler07", "dcgm", "vllm", "node", "world")
"""Each a path `/metrics/<family>`; `/metrics` serves them all."""

__all__ = ["CONTENT_TYPE", "FAMILIES", "render"]


def render(readings: Readings, family: str, rng: random.Random) -> str:
    """The exposition text of one family, or of all with `family="all"`."""
    if family != "all" and family not in FAMILIES:
        raise KeyError(family)
    readings.advance()
    scrape = Scrape(now_ms=int(readings.wall_clock() * 1000))
    pods = sorted(readings.pods.values(), key=lambda p: p.key)
    lines: list[str] = []
    for name in FAMILIES if family == "all" else (family,):
        lines += _family(name, readings, pods, scrape, rng)
    return "\n".join(lines) + "\n"


def _family(
    name: str, readings: Readings, pods: list[PodReadings], scrape: Scrape, rng: random.Random
) -> Iterable[str]:
    if name == "kepler":
        return render_kepler(pods, readings.nodes, scrape, rng)
    if name == "kepler07":
        return render_kepler07(pods, scrape)
    if name == "dcgm":
        return render_dcgm(pods, scrape)
    if name == "vllm":
        return render_vllm(pods, scrape)
    if name == "node":
        return render_ipmi(readings.nodes, scrape)
    return render_world(readings.site, scrape)
