"""The opening every reconcile of a PowerCappingConfig shares: read it, parse it, or step back.

Four controllers reconcile the same config key, and each begins the same way: read the config
from the informer's cache (gone: forget what was kept for it), and parse it with
`config_from_object`. A spec the API server's schema let through can still fail the
controller's own checks; the power-cap reconciler reports it (a `Ready=False/InvalidSpec`
condition, then a `TerminalError`) and the other three stand aside (forget, done), so the user
is told once, in one place, and no controller acts on a spec it cannot read.

A reconciler opens with `await opening.open(key)`: an `Opened` (the cached object and its
parsed config) to reconcile, or the `Result` the reconcile ends with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from climatik.api.convert import InvalidConfigError, config_from_object
from climatik.domain.config import PowerCappingConfig
from climatik.kube.cache import Cache
from climatik.kube.json import ObjectMeta
from climatik.kube.store import FrozenMapping
from climatik.reconcilers.result import Result, TerminalError

log = structlog.get_logger(__name__)

ReportInvalid = Callable[[FrozenMapping, str], Awaitable[None]]
"""Tells the user why the spec cannot be read (the problem names each field by its API path);
the opening then ends the reconcile with a `TerminalError`."""

Finalize = Callable[[str, FrozenMapping], Awaitable[Result]]
"""Ends the reconcile of a config being deleted (give back what it holds, drop a finalizer)."""


@dataclass(frozen=True, slots=True)
class Opened:
    """A config to reconcile: the object as cached and its parsed spec."""

    obj: FrozenMapping
    config: PowerCappingConfig


class ConfigOpening:
    """Reads, parses and screens one config key for a reconciler.

    `forget(key)` drops what the reconciler kept for a config it will not reconcile (gone, or
    standing aside from an invalid spec). With `report_invalid`, an invalid spec is reported and
    the reconcile ends terminally; without it the reconciler stands aside. With `finalize`, a
    config being deleted is handed to it before it is parsed: giving back must not wait on a
    spec that parses. Without it a config being deleted is reconciled like any other until it
    is gone.
    """

    def __init__(
        self,
        configs: Cache[FrozenMapping],
        *,
        forget: Callable[[str], None],
        report_invalid: ReportInvalid | None = None,
        finalize: Finalize | None = None,
    ) -> None:
        self._configs = configs
        self._forget = forget
        self._report_invalid = report_invalid
        self._finalize = finalize

    async def open(self, key: str) -> Opened | Result:
        """The config to reconcile, or the result the reconcile of `key` ends with."""
        obj = self._configs.store.get(key)
        if obj is None:
            self._forget(key)
            return Result()
        if self._finalize is not None and ObjectMeta.of(obj).deletion_timestamp:
            return await self._finalize(key, obj)
        try:
            config = config_from_object(obj)
        except InvalidConfigError as error:
            if self._report_invalid is None:
                log.debug("invalid_spec_stood_aside", error=str(error))
                self._forget(key)
                return Result()
            await self._report_invalid(obj, str(error))
            raise TerminalError(f"{key}: {error}") from error
        return Opened(obj, config)
