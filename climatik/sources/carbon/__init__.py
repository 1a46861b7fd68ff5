"""Grid carbon intensity from the providers a datacenter may sit behind.

Every provider answers through the same `CarbonSource` protocol with `CarbonReading` values in
gCO2/kWh, labelled average or marginal. `ResilientCarbonSource` adds what the controller needs on
top of any of them: one fetch per slot, last-known-good for a bounded time, then a fallback.
Which provider a config names is looked up in `registry` (one module per provider, one line there).
"""

from climatik.sources.carbon.base import CarbonSource, CarbonSourceError
from climatik.sources.carbon.electricitymaps import ElectricityMapsSource
from climatik.sources.carbon.provider import ProviderDefinition, ProviderRequest
from climatik.sources.carbon.registry import PROVIDERS, build_source, needs_key, provider_definition
from climatik.sources.carbon.resilient import CarbonOutcome, Freshness, ResilientCarbonSource
from climatik.sources.carbon.static import StaticCarbonSource
from climatik.sources.carbon.uk import UKNationalGridSource
from climatik.sources.carbon.watttime import WattTimeSource

__all__ = [
    "PROVIDERS",
    "CarbonOutcome",
    "CarbonSource",
    "CarbonSourceError",
    "ElectricityMapsSource",
    "Freshness",
    "ProviderDefinition",
    "ProviderRequest",
    "ResilientCarbonSource",
    "StaticCarbonSource",
    "UKNationalGridSource",
    "WattTimeSource",
    "build_source",
    "needs_key",
    "provider_definition",
]
