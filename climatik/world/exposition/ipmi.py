"""The node's inlet temperature as an IPMI exporter serves it, the reading rack-inlet limits and
placement's thermal scores use."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from climatik.world.exposition.text import Scrape, header
from climatik.world.readings import NodeReadings

INLET_SENSOR = {"id": "4", "name": "Inlet Temp"}


def render_ipmi(nodes: Mapping[str, NodeReadings], scrape: Scrape) -> Iterator[str]:
    yield from header("ipmi_temperature_celsius", "gauge", "Temperature sensor reading")
    for name in sorted(nodes):
        inlet_c = nodes[name].inlet_c
        if inlet_c is not None:
            labels = {**INLET_SENSOR, "node": name}
            yield scrape.sample("ipmi_temperature_celsius", labels, inlet_c)
