"""`climatik router`'s settings: `CLIMATIK_ROUTER__*` variables, read once at start.

One root with nested groups in the project's style (`__` between levels):
`CLIMATIK_ROUTER__SERVICE=vllm`, `CLIMATIK_ROUTER__PROMETHEUS__ADDRESS=http://prometheus:9090`,
`CLIMATIK_ROUTER__ROUTING__MAX_BATCH=128`. The command line overrides the common ones.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from climatik.domain.config import MeasurementPreset
from climatik.domain.errors import UserError
from climatik.domain.routing import RoutingSettings

ENV_PREFIX = "CLIMATIK_ROUTER__"


class RoutingGroup(BaseModel):
    """The picker's settings (`climatik.domain.routing.RoutingSettings`)."""

    max_reading_age_s: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    kv_cache_limit: float = Field(default=0.9, gt=0, le=1)
    max_batch: int = Field(default=256, ge=1)
    affinity_tolerance: float = Field(default=0.1, ge=0, le=1)
    tpot_budget_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Time per output token an endpoint's learned load curve may predict with one more request
    (`CLIMATIK_ROUTER__ROUTING__TPOT_BUDGET_S`); None: batch slots only, as without curves."""
    ttft_budget_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds the prefills of this router's recent sends to an endpoint may add up to
    (`CLIMATIK_ROUTER__ROUTING__TTFT_BUDGET_S`); None: not judged, and sends are not counted."""

    def picker(self) -> RoutingSettings:
        return RoutingSettings(
            self.max_reading_age_s,
            self.kv_cache_limit,
            self.max_batch,
            self.affinity_tolerance,
            tpot_budget_s=self.tpot_budget_s,
            ttft_budget_s=self.ttft_budget_s,
        )


class PrometheusGroup(BaseModel):
    address: str | None = None
    """Where tokens per joule come from (none: no efficiency, every pick is `no_data`)."""
    timeout_s: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    power_preset: Literal["KeplerPod", "Kepler07", "DCGM"] = "KeplerPod"
    namespace_label: str = "namespace"
    """The label vLLM's series carry their pod's namespace in (set by the scrape config)."""
    pod_label: str = "pod"
    tokens_window: str = "1m"

    @property
    def preset(self) -> MeasurementPreset:
        return MeasurementPreset(self.power_preset)


class PodMetricsGroup(BaseModel):
    enabled: bool = True
    """Scrape each endpoint's own `/metrics` for vLLM's running, waiting and KV-cache gauges."""
    path: str = "/metrics"
    port: int | None = Field(default=None, ge=1, le=65535)
    """Where the pod serves its metrics; none: the port requests go to (vLLM's default)."""
    timeout_s: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    service: str = ""
    """The Service whose EndpointSlices list the model servers (required)."""
    namespace: str | None = None
    """The Service's namespace; none: the pod's own (or the kubeconfig context's)."""
    port_name: str | None = None
    """The EndpointSlice port to send to; none: the slice's first port."""
    kubeconfig: str | None = None
    kube_request_timeout_s: float = Field(default=30.0, gt=0)
    watch_inactivity_timeout_s: float = Field(default=90.0, gt=0)
    host: str = "0.0.0.0"  # noqa: S104 - clients and probes come from outside the pod
    port: int = Field(default=8000, ge=0, le=65535)
    """The OpenAI-compatible API."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """`/metrics`, `/healthz`, `/readyz`."""
    ext_proc_port: int | None = Field(default=None, ge=0, le=65535)
    """Also serve the Envoy ext_proc Endpoint Picker (docs/router-extproc.md) on this port, from
    the same endpoint table; needs the `router-extproc` extra. None: not served."""
    session_header: str = "x-session-id"
    """The request header whose value keeps a session on one endpoint (affinity)."""
    max_connections: int = Field(default=4096, ge=1)
    """Upstream connections the shared client session may hold open, all endpoints together."""
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0)
    """The longest silence from an upstream (before its headers, or between two chunks)."""
    shutdown_grace_s: float = Field(default=45.0, ge=0)
    """After SIGTERM, requests in flight (long streams) get this long to finish; keep it under
    the pod's `terminationGracePeriodSeconds` (60 in the installers)."""
    refresh_interval_s: float = Field(default=5.0, gt=0)
    """How often scores are read; each read runs under `refresh_timeout_s`."""
    refresh_timeout_s: float = Field(default=4.0, gt=0)
    routing: RoutingGroup = Field(default_factory=RoutingGroup)
    prometheus: PrometheusGroup = Field(default_factory=PrometheusGroup)
    pod_metrics: PodMetricsGroup = Field(default_factory=PodMetricsGroup)


class RouterSettingsError(UserError):
    """A `CLIMATIK_ROUTER__*` variable (or flag) holds a value the settings refuse."""


def load_router_settings(**overrides: Any) -> RouterSettings:
    """The settings from the environment with `overrides` on top, refused by variable name."""
    try:
        settings = RouterSettings(**overrides)
    except ValidationError as error:
        problems = [
            f"{ENV_PREFIX}{'__'.join(str(p).upper() for p in item['loc'])}: {item['msg']}"
            for item in error.errors()
        ]
        raise RouterSettingsError("; ".join(problems)) from error
    if not settings.service:
        raise RouterSettingsError(
            f"name the model servers' Service: {ENV_PREFIX}SERVICE or --service"
        )
    return settings
