"""A carbon provider's API key: read from its Secret, explained when it cannot be, retried.

The controller may only `get` the one named Secret (RBAC grants no list or watch), so a rotated
key is noticed by reading it again, and a Secret created after its config by retrying. Nothing a
user can do to a Secret is terminal: `SecretUnreadableError` names the Secret and key and says
what to do, never what the Secret holds, and says whether the cause may pass by itself (server
errors, timeouts: retried sooner) or needs a person (missing, forbidden, no such key, wrong
format). What the controller keeps is the key's digest, never the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from climatik.domain.config import CarbonConfig
from climatik.kube.json import JsonObject
from climatik.sources.carbon.registry import needs_key, provider_definition

TRANSIENT_SPEED_UP = 5.0
"""Server errors and timeouts are retried this many times sooner than a missing Secret."""
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class SecretUnreadableError(Exception):
    """The provider's key cannot be had from its Secret; `message` says what to do."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True, slots=True)
class Credential:
    """A key as read from its Secret; its repr shows the digest only."""

    value: str = field(repr=False)
    digest: str

    @classmethod
    def of(cls, value: str) -> Credential:
        return cls(value, hashlib.sha256(value.encode()).hexdigest())


def needs_secret(carbon: CarbonConfig) -> bool:
    """Whether the provider authenticates with a key from `apiKeySecretRef`."""
    return needs_key(carbon.provider)


def secret_name(carbon: CarbonConfig, namespace: str) -> str:
    """`Secret ns/name, key 'k'` for messages (the ref, never the content)."""
    ref = carbon.api_key_secret
    if ref is None:
        return "carbon.apiKeySecretRef"
    return f"Secret {namespace}/{ref.name}, key {ref.key!r}"


def missing_ref(carbon: CarbonConfig) -> SecretUnreadableError:
    """The spec names no Secret (the CRD requires one; an older CRD may not have)."""
    return SecretUnreadableError(
        f"carbon.apiKeySecretRef is required for provider {carbon.provider}: "
        "name the Secret and key that hold the API key",
        transient=False,
    )


def unreadable_from_status(
    carbon: CarbonConfig, namespace: str, status: int, reason: str
) -> SecretUnreadableError:
    """What an API error reading the Secret means for the user."""
    where = secret_name(carbon, namespace)
    ref_name = carbon.api_key_secret.name if carbon.api_key_secret else "?"
    if status == 404:
        return SecretUnreadableError(
            f"{where}: the Secret does not exist (HTTP 404); create it in namespace "
            f"{namespace} with the provider's API key under that key",
            transient=False,
        )
    if status in {401, 403}:
        return SecretUnreadableError(
            f"{where}: the controller may not read it (HTTP {status}); grant its service "
            f"account `get` on Secret {ref_name} in namespace {namespace} (docs/security.md)",
            transient=False,
        )
    label = f"HTTP {status} {reason}".strip()
    return SecretUnreadableError(
        f"{where}: the API server answered {label}; retrying",
        transient=status in _TRANSIENT_STATUS,
    )


def unreachable(carbon: CarbonConfig, namespace: str, what: str) -> SecretUnreadableError:
    """A timeout or connection failure reading the Secret: likely to pass, retried soon."""
    return SecretUnreadableError(
        f"{secret_name(carbon, namespace)}: {what}; retrying", transient=True
    )


def credential_from_secret(secret: JsonObject, carbon: CarbonConfig, namespace: str) -> Credential:
    """The key the provider needs from a Secret as the API server returned it."""
    ref = carbon.api_key_secret
    if ref is None:
        raise missing_ref(carbon)
    where = secret_name(carbon, namespace)
    data = secret.get("data")
    encoded = data.get(ref.key) if isinstance(data, Mapping) else None
    if encoded is None:
        raise SecretUnreadableError(
            f"{where}: the Secret has no such key; add the API key under {ref.key!r} or point "
            "carbon.apiKeySecretRef.key at the key that holds it",
            transient=False,
        )
    try:
        value = base64.b64decode(str(encoded), validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise SecretUnreadableError(
            f"{where}: the value is not text; store the API key as plain text",
            transient=False,
        ) from None
    if not value:
        raise SecretUnreadableError(
            f"{where}: the value is empty; put the API key there", transient=False
        )
    problem = provider_definition(carbon.provider).key_problem(value)
    if problem is not None:
        raise SecretUnreadableError(f"{where}: {problem}", transient=False)
    return Credential.of(value)


def retry_delay_s(failures: int, *, transient: bool, first_s: float, max_s: float) -> float:
    """Delay before reading the Secret again after `failures` failed reads in a row (>= 1).

    Doubles from `first_s` up to `max_s`; for causes that pass by themselves (server errors,
    timeouts) both are `TRANSIENT_SPEED_UP` times shorter.
    """
    if transient:
        first_s, max_s = first_s / TRANSIENT_SPEED_UP, max_s / TRANSIENT_SPEED_UP
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 is past any sane cap; avoids overflow
    return float(min(max_s, first_s * 2**exponent))
