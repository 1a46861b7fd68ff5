"""Reconciler settings (pydantic-settings, one class and `CLIMATIK_<CONTROLLER>__` prefix each).

Per-config choices live in the PowerCappingConfig; these are the controller-wide defaults a
config may leave out, such as the Prometheus to ask when the config names none.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from climatik.domain.config import CarbonProvider
from climatik.policies.gpu_clock import DEFAULT_MAX_THROUGHPUT_LOSS
from climatik.policies.observations import HEAT_HISTORY_SAMPLES
from climatik.sources.address import ConnectTo

CAPPING_ALLOWED_HOSTS_ENV = "CLIMATIK_CAPPING__ALLOWED_HOSTS"
DEPRECATED_ALLOWED_PROMETHEUS_HOSTS_ENV = "CLIMATIK_CAPPING__ALLOWED_PROMETHEUS_HOSTS"
"""The old name of `CLIMATIK_CAPPING__ALLOWED_HOSTS`, deprecated (read for one release): the
allow-list is `allowed_hosts` in both `CappingSettings` and `PlacementSettings`."""


class CappingSettings(BaseSettings):
    """Controller-wide defaults of the power-cap and carbon reconcilers."""

    model_config = SettingsConfigDict(env_prefix="CLIMATIK_CAPPING__", extra="ignore")

    prometheus_address: str | None = None
    """Prometheus used when a config names none (e.g. `http://prometheus.monitoring:9090`)."""
    prometheus_timeout_s: float = Field(default=5.0, gt=0)
    allowed_hosts: list[str] = Field(default_factory=list)
    """When set, configs may only name Prometheus servers on these hosts (the same name as
    `PlacementSettings.allowed_hosts`)."""
    deprecated_allowed_prometheus_hosts: list[str] = Field(
        default_factory=list, validation_alias=DEPRECATED_ALLOWED_PROMETHEUS_HOSTS_ENV
    )
    """The old name of `allowed_hosts` (`CLIMATIK_CAPPING__ALLOWED_PROMETHEUS_HOSTS`), read for
    one release only while `allowed_hosts` is empty; to be removed."""
    interval_s: float = Field(default=15.0, gt=0)
    """How often each config is measured and decided, besides reacting to changes."""
    tokens_window_s: float | None = Field(default=None, ge=2)
    """The window of the tokens-per-second rate; None: `rate(...[5m])`. A world that runs
    faster than life (`climatik demo`) shortens it by the same factor: a window longer than
    the replicas' changes sets new watts against old tokens and inflates the energy per token."""
    tuning_grace_s: float = Field(default=60.0, ge=0)
    """After a GPU tuning result, hold ceilings this long while old readings age out."""
    status_refresh_s: float = Field(default=300.0, gt=0)
    """Measured figures in status that moved by less than 5 % (and messages whose only change is
    a number) are written at most this often; decisions, conditions and ceilings at once."""
    rack_label: str = "rack"
    """Label carrying the rack in rack-level query results (`$rack` queries need none)."""
    max_plausible_watts_per_server: float = Field(default=100_000.0, gt=0, allow_inf_nan=False)
    """Measurements are untrusted: more than this per server (a target: per pod; the scope and
    a rack: per node) is an implausible reading, treated as missing data."""
    prometheus_cache_ttl_s: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    """How long one Prometheus answer serves every config asking the same query (0 keeps only
    the coalescing of identical queries in flight); in force at most a third of `interval_s`
    (`cache_ttl_in_force_s`)."""
    prometheus_breaker_initial_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """After a Prometheus times out or is unreachable, queries to it fail fast this long; the
    cool-down doubles with each failed probe up to `prometheus_breaker_max_s`."""
    prometheus_breaker_max_s: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    """The longest cool-down. At most `interval_s`, so a Prometheus that comes back is probed
    again within one control period and capping recovers within two."""
    workers: int = Field(default=8, ge=1)
    """Configs of the power-cap controller reconciled at once (never one config twice): a
    config whose Prometheus does not answer holds one worker, not the whole controller."""
    reconcile_timeout_s: float = Field(default=10.0, gt=0)
    """A power-cap reconcile still running after this is cancelled and retried with backoff.
    Well inside `interval_s`, and above `prometheus_timeout_s`: the queries of one reconcile
    run concurrently, so a silent Prometheus costs one query timeout and its config still gets
    its `MetricsAvailable=False` status and, in time, its fail-safe ceiling."""

    @property
    def cache_ttl_in_force_s(self) -> float:
        """`prometheus_cache_ttl_s`, at most a third of `interval_s`. A kept answer is handed
        over for up to two TTLs (the second while it refreshes): with a TTL near the interval,
        a round decides on the reading the round before it read. At a 3 s interval the 5 s
        default served site power 6-9 s old, and a cut after a demand step came a round late."""
        return min(self.prometheus_cache_ttl_s, self.interval_s / 3.0)

    @model_validator(mode="after")
    def _read_the_deprecated_name(self) -> Self:
        # As in GpuTuningSettings: an overlay patching the old variable onto a base that sets
        # the new one to `[]` keeps its allow-list (dropping it silently would open the guard).
        if not self.allowed_hosts and self.deprecated_allowed_prometheus_hosts:
            self.allowed_hosts = list(self.deprecated_allowed_prometheus_hosts)
        return self


class PlacementSettings(BaseSettings):
    """Controller-wide settings of rack placement (prefix `CLIMATIK_PLACEMENT__`)."""

    model_config = SettingsConfigDict(env_prefix="CLIMATIK_PLACEMENT__", extra="ignore")

    interval_s: float = Field(default=30.0, gt=0)
    """How often racks are re-read and re-scored, besides reacting to changes."""
    status_refresh_s: float = Field(default=300.0, gt=0)
    """Rack readings in the condition message that moved by less than 5 % are written at most
    this often; a new status, reason, rack over its limit or problem at once."""
    workers: int = Field(default=2, ge=1)
    """Configs of the placement controller reconciled at once (never one config twice)."""
    reconcile_timeout_s: float = Field(default=60.0, gt=0)
    """A placement reconcile still running after this is cancelled and retried with backoff.
    Longer than power capping's: it asks for each workload's power history in turn."""
    zone_label_key: str = "climatik-project.ai/zone"
    """Node label naming the cooling zone; without it a rack is its own zone."""
    recirculation_config_map: str = "climatik-recirculation"
    """ConfigMap (in the config's namespace) with `racks.yaml`: per rack
    `recirculationCPerKw`, optionally `zone`, `inletRiseCPerKw` (the rack's column of the heat
    matrix: per inlet rack, °C of rise per kW dissipated in this rack) and `rowPosition` (its
    place along the row, in racks: with every rack's, the estimate gets the geometric prior)."""
    snapshot_max_age_s: float = Field(default=300.0, gt=0)
    """The webhook ignores scores older than this (the reconciler has stalled)."""
    max_preferred_racks: int = Field(default=10, ge=1, le=100)
    template_min_interval_s: float = Field(default=600.0, ge=0)
    """Least time between two Template-mode patches of one Deployment (each is a rollout)."""
    history_samples: int = Field(default=HEAT_HISTORY_SAMPLES, ge=0)
    """Rack readings kept per config for estimating recirculation (0 disables the estimate)."""
    prometheus_address: str | None = None
    """Prometheus for rack signals when a config names none (as `CLIMATIK_CAPPING__...`)."""
    prometheus_timeout_s: float = Field(default=5.0, gt=0)
    allowed_hosts: list[str] = Field(default_factory=list)
    """When set, Prometheus and cooling-webhook URLs may only name these hosts."""
    rack_label: str = "rack"
    """Label carrying the rack in rack-level query results (`$rack` queries need none)."""
    exhaust_temperature_query: str | None = None
    airflow_query: str | None = None
    cooling_power_query: str | None = None
    supply_temperature_query: str | None = None
    """Site-wide rack queries the PowerCappingConfig has no field for (see docs/placement.md)."""
    history_window_s: float = Field(default=3600.0, ge=0)
    """Rack and service power history fetched for the smoothing term (0: no smoothing)."""
    webhook_port: int = Field(default=9443, ge=0, le=65535)
    """Port of the placement admission webhook (HTTPS)."""
    webhook_cert_dir: str = "/etc/climatik/webhook"
    """Directory with `tls.crt` and `tls.key`; without them the webhook is not served."""
    deletion_cost_retry_s: float = Field(default=600.0, ge=0)
    """After the API refuses (403) a pod-deletion-cost patch in a namespace, how long no pod
    of that namespace is patched again (RBAC grants `patch` on pods per namespace)."""
    supply_guard_c: float = Field(default=0.5, ge=0)
    min_supply_c: float = 10.0
    max_supply_c: float = 27.0
    max_supply_step_c: float = Field(default=2.0, gt=0)


class CarbonSettings(BaseSettings):
    """Where the carbon providers live (overridable for proxies, mirrors and tests)."""

    model_config = SettingsConfigDict(env_prefix="CLIMATIK_CARBON__", extra="ignore")

    uk_national_grid_url: str = "https://api.carbonintensity.org.uk"
    electricity_maps_url: str = "https://api.electricitymap.org"
    watttime_url: str = "https://api.watttime.org"
    timeout_s: float = Field(default=10.0, gt=0)
    secret_refresh_s: float = Field(default=60.0, gt=0)
    """Read a config's API key Secret again at most this often (and at once when the provider
    refuses the key), so a rotated key is used without a restart. RBAC grants `get` by name
    only, so the Secret cannot be watched."""
    secret_retry_s: float = Field(default=10.0, gt=0)
    """First retry after the Secret cannot be read (missing, forbidden, no such key, wrong
    format); the delay doubles up to `secret_retry_max_s`. Server errors and timeouts are
    retried five times sooner (2 s doubling to 60 s with the defaults)."""
    secret_retry_max_s: float = Field(default=300.0, gt=0)
    workers: int = Field(default=2, ge=1)
    """Configs of the carbon controller reconciled at once (one fetch per config and slot)."""
    plan_interval_s: float = Field(default=60.0, gt=0)
    """How often deferrable work with a deadline is planned again (its backlog and throughput
    read from the power-cap reconciler's status), and how often its forecast may be asked."""
    reconcile_timeout_s: float = Field(default=120.0, gt=0)
    """A carbon reconcile still running after this is cancelled and retried with backoff: room
    for a provider request, its retries after 429/5xx (Retry-After up to 30 s) and a second
    request (WattTime's login)."""

    def base_url(self, provider: CarbonProvider) -> str | None:
        """Where to reach `provider`; None for a provider without a URL setting (its own default).

        A new provider whose URL should be overridable adds a field above and a line here.
        """
        urls = {
            CarbonProvider.UK_NATIONAL_GRID: self.uk_national_grid_url,
            CarbonProvider.ELECTRICITY_MAPS: self.electricity_maps_url,
            CarbonProvider.WATT_TIME: self.watttime_url,
        }
        return urls.get(provider)


DEPRECATED_APPLY_NAMESPACES_ENV = "CLIMATIK_GPU_TUNING__APPLY_NAMESPACES"
"""The old name of `CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES`, deprecated (read for one release)."""


class GpuTuningSettings(BaseSettings):
    """Where and how GPU tuning Jobs run (`CLIMATIK_GPU_TUNING__*`)."""

    model_config = SettingsConfigDict(env_prefix="CLIMATIK_GPU_TUNING__", extra="ignore")

    enabled: bool = True
    """Run the GPU-tuning controller. Off: it is not started, so nothing lists or watches Jobs or
    ConfigMaps in `job_namespace`, and an installation without that namespace and its Role
    (Helm `gpuTuning.enabled=false`, deploy/overlays/no-gpu-tuning) still caps power."""
    image: str = "ghcr.io/climatik-project/climatik:latest"
    allowed_namespaces: list[str] = Field(default_factory=list)
    """Namespaces whose configs may run tuning Jobs at all (`gpuTuning.mode` Recommend or
    Apply): every sweep locks the SM clocks of every GPU of a node, whoever else runs there,
    for up to `active_deadline_s`, and Apply keeps one locked. `["*"]`: every namespace. Empty
    (the default): none. A config asking for tuning elsewhere gets no Job and is told why."""
    deprecated_apply_namespaces: list[str] = Field(
        default_factory=list, validation_alias=DEPRECATED_APPLY_NAMESPACES_ENV
    )
    """The old name of `allowed_namespaces` (`CLIMATIK_GPU_TUNING__APPLY_NAMESPACES`), read for
    one release only while `allowed_namespaces` is empty; to be removed."""
    job_namespace: str = "climatik-gpu-tuning"
    """A namespace of its own: the Job needs CAP_SYS_ADMIN, which restricted namespaces refuse."""
    service_account: str = "climatik-gpu-tuner"
    runtime_class: str | None = "nvidia"
    vllm_metrics_port: int = 8000
    max_throughput_loss: float = Field(default=DEFAULT_MAX_THROUGHPUT_LOSS, gt=0, lt=1)
    active_deadline_s: int = 1800
    ttl_after_finished_s: int = 86_400
    interval_s: float = Field(default=60.0, gt=0)
    reconcile_timeout_s: float = Field(default=60.0, gt=0)
    """A GPU-tuning reconcile (API calls only, each under its own deadline) still running after
    this is cancelled and retried with backoff. One worker: Jobs are rare and cheap to plan."""

    @model_validator(mode="after")
    def _read_the_deprecated_name(self) -> Self:
        # An overlay patching the old variable onto a base that sets the new one to `[]` keeps
        # working: the old list counts while the new one is empty (Helm's template does the same).
        if not self.allowed_namespaces and self.deprecated_apply_namespaces:
            self.allowed_namespaces = list(self.deprecated_apply_namespaces)
        return self


class VpaSettings(BaseSettings):
    """Coordination with the Vertical Pod Autoscaler (`CLIMATIK_VPA__*`, issue 23)."""

    model_config = SettingsConfigDict(env_prefix="CLIMATIK_VPA__", extra="ignore")

    enabled: bool = False
    """Run the VPA-hold controller. Off by default: it watches VerticalPodAutoscalers, whose CRD
    a cluster without VPA does not serve (the informer would be refused)."""
    interval_s: float = Field(default=15.0, gt=0)
    hold_fraction: float = Field(default=0.95, gt=0, le=1)
    """Hold a rack's VPA evictions from this fraction of its `maxPower`."""
    release_fraction: float = Field(default=0.90, gt=0, le=1)
    """Release them once the rack is below this fraction (hysteresis: at most `hold_fraction`)."""
    hold_margin_c: float = Field(default=1.0, ge=0)
    """Hold from this many degrees below the rack's `maxTemperature`."""
    release_margin_c: float = Field(default=2.0, ge=0)
    """Release once the inlet is this many degrees below it (at least `hold_margin_c`)."""
    reconcile_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _release_below_hold(self) -> Self:
        if self.release_fraction > self.hold_fraction:
            raise ValueError("release_fraction must not exceed hold_fraction")
        if self.release_margin_c < self.hold_margin_c:
            raise ValueError("release_margin_c must be at least hold_margin_c")
        return self


class OutboundSettings(BaseSettings):
    """How the controller reaches what configs name (`CLIMATIK_OUTBOUND__*`)."""

    model_config = SettingsConfigDict(env_prefix="CLIMATIK_OUTBOUND__", extra="ignore")

    connect_to: list[str] = Field(default_factory=list)
    """`HOST:PORT:TO_HOST:TO_PORT` rules, as curl's `--connect-to`: requests for HOST:PORT
    connect to TO_HOST:TO_PORT. For a controller outside the cluster it caps (the dev cluster,
    `climatik demo`): a config's in-cluster Prometheus address then works unchanged."""

    @field_validator("connect_to")
    @classmethod
    def _rules_parse(cls, value: list[str]) -> list[str]:
        for rule in value:
            ConnectTo.parse(rule)
        return value

    def rules(self) -> tuple[ConnectTo, ...]:
        return tuple(ConnectTo.parse(rule) for rule in self.connect_to)
