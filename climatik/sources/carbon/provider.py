"""What a carbon provider module declares so the registry can build it for a config.

A provider is one module under `climatik/sources/carbon/` that exports a `ProviderDefinition`:
how to build its `CarbonSource` from a config's carbon section, whether it needs an API key from
the config's Secret, and what shape that key must have. The reconciler knows no provider by name;
it hands a `ProviderRequest` to `registry.build_source`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from climatik.domain.config import CarbonConfig
from climatik.sources.carbon.base import CarbonSource


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """Everything a provider may use to build its source for one config."""

    carbon: CarbonConfig
    session: Callable[[], Awaitable[aiohttp.ClientSession]]
    """The controller's shared HTTP session, opened on first use (Static never asks for it)."""
    wall_clock: Callable[[], datetime]
    timeout_s: float
    base_url: str | None = None
    """Where to reach the provider (a proxy, a mirror, a test server); None: its public API."""
    key: str | None = field(default=None, repr=False)
    """The API key read from the config's Secret, for providers that declare `needs_key`."""

    def require_key(self) -> str:
        """The key; the reconciler reads it before building a provider that needs one."""
        if self.key is None:
            msg = f"provider {self.carbon.provider} needs an API key and none was read"
            raise ValueError(msg)
        return self.key


def any_key_shape(_key: str) -> str | None:
    """Accept every non-empty key (the provider itself says whether it is valid)."""
    return None


@dataclass(frozen=True, slots=True)
class ProviderDefinition:
    """One carbon provider as the controller sees it."""

    build: Callable[[ProviderRequest], Awaitable[CarbonSource]]
    needs_key: bool = False
    """Whether it authenticates with a key from the config's `apiKeySecretRef`."""
    key_problem: Callable[[str], str | None] = any_key_shape
    """What is wrong with a key's shape (e.g. WattTime's `user:password`), None when it fits."""
