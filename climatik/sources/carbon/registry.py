"""The carbon providers a config may name, by name: the one line to add for a new provider.

`build_source` turns a config's carbon section into a `CarbonSource` through the provider's own
module, so the reconciler never names a provider. Every `CarbonProvider` of the API has an entry
(a unit test holds the two together).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from climatik.domain.config import CarbonProvider
from climatik.sources.carbon import electricitymaps, static, uk, watttime
from climatik.sources.carbon.base import CarbonSource
from climatik.sources.carbon.provider import ProviderDefinition, ProviderRequest

PROVIDERS: Mapping[CarbonProvider, ProviderDefinition] = MappingProxyType(
    {
        CarbonProvider.UK_NATIONAL_GRID: uk.PROVIDER,
        CarbonProvider.ELECTRICITY_MAPS: electricitymaps.PROVIDER,
        CarbonProvider.WATT_TIME: watttime.PROVIDER,
        CarbonProvider.STATIC: static.PROVIDER,
    }
)


def provider_definition(provider: CarbonProvider) -> ProviderDefinition:
    """The registered definition of `provider`; a name without one is a programming error."""
    try:
        return PROVIDERS[provider]
    except KeyError:
        msg = f"carbon provider {provider} has no entry in climatik.sources.carbon.registry"
        raise LookupError(msg) from None


def needs_key(provider: CarbonProvider) -> bool:
    """Whether the provider authenticates with a key from the config's `apiKeySecretRef`."""
    return provider_definition(provider).needs_key


async def build_source(request: ProviderRequest) -> CarbonSource:
    """The provider's source for the config in `request`."""
    return await provider_definition(request.carbon.provider).build(request)
