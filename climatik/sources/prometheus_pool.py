"""The controller's shared Prometheus read layer: one client, one breaker, shared answers.

Built once per controller and handed to its reconciler, instead of a `PrometheusClient` per
reconcile. A controller holding 5,000 configs on a 15 s interval reconciles some 333 of them
a second, mostly against a handful of servers, so this layer:

- keeps one `PrometheusClient` per (address, settings), on the controller's shared session;
- coalesces identical queries in flight and keeps each answer for `cache_ttl_s` (5 s by
  default, well under the control interval; at most half the configured maximum sample age), so
  the grouped preset queries of `climatik.sources.power_queries` cost one request per
  (server, shape) per TTL whatever the number of targets and configs. A kept answer is judged
  for age with the caller's clock when it is used, as a fresh one would be. An answer past its
  TTL is handed over one TTL longer while a single read refreshes it in the background, so no
  asker waits for a query as answers expire (together never older than the maximum sample age);
- trips a circuit breaker per address (`climatik.sources.breaker`) when a server times out or
  cannot be reached: its queries then fail at once with `PrometheusUnreachableError` saying
  since when and when it retries, so one tenant's dead Prometheus does not eat the shared
  workers' time. Any answer, an error answer included, proves the server alive.

`SharedPrometheus` (from `querier()`) offers `query`, `query_range` and `query_by_pod` with the
client's signatures, so the power and rack sources use it unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from typing import Literal, TypeVar, cast

import aiohttp
import yarl

from climatik.sources.address import redact
from climatik.sources.breaker import (
    BreakerSettings,
    CircuitBreaker,
    CircuitOpenError,
    Outcome,
)
from climatik.sources.prometheus import PrometheusClient, PrometheusSettings
from climatik.sources.prometheus_parse import apply_max_age
from climatik.sources.prometheus_results import (
    InstantResult,
    PodSamples,
    PrometheusAddressRejectedError,
    PrometheusError,
    PrometheusTimeoutError,
    PrometheusUnreachableError,
    RangeResult,
)
from climatik.sources.singleflight import DEFAULT_MAX_ENTRIES, SingleFlight

DEFAULT_CACHE_TTL_S = 5.0

T = TypeVar("T")
Lookback = float | Literal["default"] | None


class PrometheusPool:
    """Shared Prometheus reads for one controller; `close()` it when the controller stops."""

    def __init__(
        self,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        *,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        breaker: BreakerSettings | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        serve_stale: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if cache_ttl_s < 0:
            raise ValueError("cache_ttl_s must not be negative")
        self._session_factory = session_factory
        self._cache_ttl_s = cache_ttl_s
        self._serve_stale = serve_stale
        self._breaker_settings = breaker if breaker is not None else BreakerSettings()
        self._clock = clock
        self._wall_clock = wall_clock
        self._flights: SingleFlight[Hashable, object] = SingleFlight(
            max_entries=max_entries, clock=clock
        )
        self._clients: dict[
            tuple[str, PrometheusSettings], tuple[aiohttp.ClientSession, PrometheusClient]
        ] = {}
        self._breakers: dict[str, CircuitBreaker] = {}

    def querier(self, address: str, settings: PrometheusSettings) -> SharedPrometheus:
        """Reads from `address` with `settings`, shared with every other asker. No I/O."""
        return SharedPrometheus(self, address, settings)

    async def close(self) -> None:
        """Cancel reads in flight and forget kept answers; the session is not ours to close."""
        await self._flights.close()
        self._clients.clear()

    def ttl_s(self, settings: PrometheusSettings) -> float:
        """How long an answer is kept: the TTL, and never more than half the maximum age."""
        if settings.max_sample_age_s is None:
            return self._cache_ttl_s
        return min(self._cache_ttl_s, settings.max_sample_age_s / 2)

    async def shared(
        self,
        key: Hashable,
        address: str,
        settings: PrometheusSettings,
        call: Callable[[PrometheusClient], Awaitable[T]],
        promql: str,
        *,
        ttl_s: float | None = None,
        refresh: bool = False,
    ) -> T:
        """`call` on the address's client, coalesced and kept under `key` (for `ttl_s`, by
        default the pool's), behind the breaker; `refresh` asks again over a kept answer."""

        async def fetch() -> object:
            return await self._guarded(address, settings, call, promql)

        keep_s = self.ttl_s(settings) if ttl_s is None else ttl_s
        # The key names the call (query kind and arguments), so its answer is a T.
        stale_s = keep_s if self._serve_stale else 0.0
        return cast(
            "T",
            await self._flights.get(key, fetch, ttl_s=keep_s, stale_s=stale_s, refresh=refresh),
        )

    def kept(self, key: Hashable) -> object | None:
        """The answer kept under `key` while it is fresh (no I/O, no wait); None otherwise."""
        return self._flights.peek(key)

    def wall_now(self) -> float:
        """Unix time, for judging the age of kept answers."""
        return self._wall_clock()

    def _breaker(self, address: str) -> CircuitBreaker:
        key = _server_of(address)
        breaker = self._breakers.get(key)
        if breaker is None:
            # Closed, idle breakers carry no state: drop them so configs that come and go with
            # addresses of their own do not grow this map for the controller's lifetime.
            self._breakers = {k: b for k, b in self._breakers.items() if not b.forgettable}
            breaker = self._breakers[key] = CircuitBreaker(
                self._breaker_settings, clock=self._clock
            )
        return breaker

    async def _client(self, address: str, settings: PrometheusSettings) -> PrometheusClient:
        session = await self._session_factory()
        held = self._clients.get((address, settings))
        if held is not None and held[0] is session:
            return held[1]
        client = PrometheusClient(session, address, settings, clock=self._wall_clock)
        self._clients[(address, settings)] = (session, client)
        return client

    async def _guarded(
        self,
        address: str,
        settings: PrometheusSettings,
        call: Callable[[PrometheusClient], Awaitable[T]],
        promql: str,
    ) -> T:
        breaker = self._breaker(address)
        try:
            ticket = breaker.admit()
        except CircuitOpenError as refused:
            raise PrometheusUnreachableError(
                f"Prometheus at {redact(address)} is {refused}", query=promql
            ) from None
        outcome, detail = Outcome.NEUTRAL, ""
        try:
            answer = await call(await self._client(address, settings))
        except (PrometheusTimeoutError, PrometheusUnreachableError) as exc:
            outcome, detail = Outcome.FAILURE, exc.message
            raise
        except PrometheusAddressRejectedError:
            raise  # refused here, nothing asked: the server's health is unknown
        except PrometheusError:
            outcome = Outcome.SUCCESS  # an answer, if an unhappy one
            raise
        else:
            outcome = Outcome.SUCCESS
            return answer
        finally:
            breaker.record(ticket, outcome, detail)


class SharedPrometheus:
    """One address's reads through the pool, with `PrometheusClient`'s query methods."""

    def __init__(self, pool: PrometheusPool, address: str, settings: PrometheusSettings) -> None:
        self._pool = pool
        self._address = address
        self._settings = settings
        # Built once: every reconcile of every config looks its grouped answers up by it.
        self._by_pod_settings = replace(settings, max_sample_age_s=None)

    @property
    def address(self) -> str:
        return self._address

    @property
    def settings(self) -> PrometheusSettings:
        return self._settings

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: Lookback = "default",
        check_age: bool = True,
    ) -> InstantResult:
        """As `PrometheusClient.query`; the age of a kept answer is judged now."""
        key = ("query", self._address, self._settings, promql, at_s, lookback_delta_s)
        result = await self._pool.shared(
            key,
            self._address,
            self._settings,
            lambda client: client.query(
                promql, at_s=at_s, lookback_delta_s=lookback_delta_s, check_age=False
            ),
            promql,
        )
        max_age_s = self._settings.max_sample_age_s
        if check_age and at_s is None and max_age_s is not None:
            return apply_max_age(
                result, query=promql, now_s=self._pool.wall_now(), max_sample_age_s=max_age_s
            )
        return result

    async def query_range(
        self,
        promql: str,
        *,
        start_s: float,
        end_s: float,
        step_s: float,
        lookback_delta_s: Lookback = "default",
        grouped: bool = False,
    ) -> RangeResult:
        key = ("range", self._address, self._settings, promql, start_s, end_s, step_s, grouped)
        # A window that has ended cannot change: on a grid (the rack history's), every caller
        # asks the same window until the next step, so its answer is kept until then.
        closed_s = step_s - (self._pool.wall_now() - end_s)
        return await self._pool.shared(
            (*key, lookback_delta_s),
            self._address,
            self._settings,
            lambda client: client.query_range(
                promql,
                start_s=start_s,
                end_s=end_s,
                step_s=step_s,
                lookback_delta_s=lookback_delta_s,
                grouped=grouped,
            ),
            promql,
            ttl_s=closed_s if closed_s > self._pool.ttl_s(self._settings) else None,
        )

    async def query_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: Lookback = "default",
        asked_after_s: float | None = None,
    ) -> PodSamples:
        """As `PrometheusClient.query_by_pod` (its callers judge sample ages themselves); a
        kept answer asked before `asked_after_s` (wall clock) is asked again.

        One answer covers every pod of the server, so it is shared by every config asking the
        same shape, whatever its own maximum sample age: that age is left out of the key and
        `"default"` means Prometheus's own lookback, not the age (callers judge ages from the
        freshness query). Otherwise a config per distinct `maxMetricAgeSeconds` would cost the
        server one more cluster-wide query each."""
        shared = self._by_pod_settings
        key = self._by_pod_key(promql, namespace_label, pod_label, lookback_delta_s)

        async def ask(refresh: bool) -> PodSamples:
            return await self._pool.shared(
                key,
                self._address,
                shared,
                lambda client: client.query_by_pod(
                    promql,
                    namespace_label=namespace_label,
                    pod_label=pod_label,
                    lookback_delta_s=lookback_delta_s,
                ),
                promql,
                refresh=refresh,
            )

        answer = await ask(refresh=False)
        if asked_after_s is not None and answer.asked_at_s < asked_after_s:
            answer = await ask(refresh=True)
        return answer

    def kept_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: Lookback = "default",
        asked_after_s: float | None = None,
    ) -> PodSamples | None:
        """What `query_by_pod` would answer without asking, when that answer is kept."""
        key = self._by_pod_key(promql, namespace_label, pod_label, lookback_delta_s)
        answer = self._pool.kept(key)
        if not isinstance(answer, PodSamples):
            return None
        if asked_after_s is not None and answer.asked_at_s < asked_after_s:
            return None
        return answer

    def _by_pod_key(
        self, promql: str, namespace_label: str, pod_label: str, lookback_delta_s: Lookback
    ) -> Hashable:
        return (
            "by_pod",
            self._address,
            self._by_pod_settings,
            promql,
            namespace_label,
            pod_label,
            lookback_delta_s,
        )


def _server_of(address: str) -> str:
    """One breaker per server (scheme, host, port): path or query spellings of one address
    must not each get their own first timeout."""
    try:
        url = yarl.URL(address.strip())
    except ValueError:
        return address
    if not url.host:
        return address
    return f"{url.scheme}://{url.host.lower()}:{url.port}"
