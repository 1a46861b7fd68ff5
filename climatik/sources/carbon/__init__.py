"""Grid carbon intensity from the providers a datacenter may sit behind.

Every provider answers through the same `CarbonSource` protocol with `CarbonReading` values in
gCO2/kWh, labelled average or marginal. `ResilientCarbonSource` adds what the controller needs on
top of any of them: one fetch per slot, last-known-good for a bounded time, then a fallback.
Which provider a config names is looked up in `registry` (one module per provider, one line there);
the provider classes are not exported here, so the controller reaches them only through it.
"""

from climatik.sources.carbon.base import CarbonSource, CarbonSourceError
from climatik.sources.carbon.provider import ProviderDefinition, ProviderRequest
from climatik.sources.carbon.registry import PROVIDERS, build_source, needs_key, provider_definition
from climatik.sources.carbon.resilient import CarbonOutcome, Freshness, ResilientCarbonSource

__all__ = [
    "PROVIDERS",
    "CarbonOutcome",
    "CarbonSource",
    "CarbonSourceError",
    "Freshness",
    "ProviderDefinition",
    "ProviderRequest",
    "ResilientCarbonSource",
    "build_source",
    "needs_key",
    "provider_definition",
]
