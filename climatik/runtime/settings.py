"""Settings by concern, read once at start-up from ``CLIMATIK_*`` variables and passed down.

``RuntimeSettings`` is the manager's (leader election, HTTP, kube, logging); ``ControllerSettings``
holds the built-in controllers' own roots (``CLIMATIK_CAPPING__*``, ``CLIMATIK_CARBON__*``,
``CLIMATIK_GPU_TUNING__*``, ``CLIMATIK_PLACEMENT__*``), which the factories read from their
context instead of from the environment, so every controller of a process sees the same values.

Nested groups use ``__``: ``CLIMATIK_LEADER_ELECTION__LEASE_DURATION_S=15``,
``CLIMATIK_HTTP__PORT=8080``, ``CLIMATIK_KUBE__NAMESPACE=prod``, ``CLIMATIK_LOGGING__FORMAT=json``.
The command line overrides the common ones (see ``climatik/runtime/cli.py``). Defaults are
client-go's and kopf's proven values; the validators refuse combinations that cannot work (a renew
deadline longer than the lease) at start-up rather than at the first failover.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from climatik.domain.errors import UserError
from climatik.kube.kubeconfig import in_cluster_namespace
from climatik.reconcilers.settings import (
    CappingSettings,
    CarbonSettings,
    GpuTuningSettings,
    OutboundSettings,
    PlacementSettings,
    VpaSettings,
)
from climatik.runtime.heap import HeapSettings

ENV_PREFIX = "CLIMATIK_"
ENV_NESTED_DELIMITER = "__"


def default_identity() -> str:
    """``<hostname>_<random>``, client-go's convention: unique even for two replicas on one host."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElectionSettings(BaseModel):
    enabled: bool = True
    lease_name: str = "climatik-controller"
    # Namespace of the Lease; defaults to the watched namespace, then the pod's, then "default".
    lease_namespace: str | None = None
    identity: str = Field(default_factory=default_identity)
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    jitter: float = 1.2

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionSettings:
        if not self.lease_duration_s > self.renew_deadline_s > self.retry_period_s * self.jitter:
            raise ValueError("need lease_duration_s > renew_deadline_s > retry_period_s * jitter")
        return self


class HttpSettings(BaseModel):
    host: str = "0.0.0.0"  # noqa: S104 - the kubelet's probes and Prometheus come from outside
    port: int = Field(default=8080, ge=0, le=65535)


class KubeSettings(BaseModel):
    kubeconfig: str | None = None
    # Watch one namespace, or every namespace when unset.
    namespace: str | None = None
    request_timeout_s: float = 30.0
    watch_inactivity_timeout_s: float = 90.0


class LoggingSettings(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": human-readable on a terminal, JSON lines otherwise (in a cluster).
    format: Literal["auto", "json", "console"] = "auto"


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="ignore"
    )

    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    heap: HeapSettings = Field(default_factory=HeapSettings)
    # Seconds a shutting-down leader waits for in-flight reconciles before cancelling them.
    shutdown_grace_s: float = 5.0
    # Import paths ("package.module:factory") of extra controllers to run besides the built-in
    # ones: out-of-tree controllers and the integration tests' probe controller.
    extra_controllers: list[str] = Field(default_factory=list)

    def lease_namespace(self) -> str:
        if self.leader_election.lease_namespace:
            return self.leader_election.lease_namespace
        if self.kube.namespace:
            return self.kube.namespace
        return in_cluster_namespace()


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """The built-in controllers' settings, one root per concern, each with its own prefix.

    Built once per process (``load_controller_settings``) and handed to the manager, whose
    controller factories read it as ``ctx.controller_settings``. The GPU-tuning switch, for one,
    is then the same object for the list of controllers and for the power-cap reconciler that
    tells configs tuning is off.
    """

    capping: CappingSettings = field(default_factory=CappingSettings)
    carbon: CarbonSettings = field(default_factory=CarbonSettings)
    gpu_tuning: GpuTuningSettings = field(default_factory=GpuTuningSettings)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    vpa: VpaSettings = field(default_factory=VpaSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)


class SettingsError(UserError):
    """A ``CLIMATIK_*`` variable (or a flag) holds a value the settings refuse."""


def env_name(location: tuple[int | str, ...]) -> str:
    """The variable that sets a field: ``("http", "port")`` -> ``CLIMATIK_HTTP__PORT``."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part).upper() for part in location)


def load_settings(**overrides: Any) -> RuntimeSettings:
    """Read the settings from the environment with the command line's `overrides` on top (by
    group, e.g. ``http={"port": 9090}``), refusing bad values with the variable's name."""
    try:
        return RuntimeSettings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            value = item["input"]
            if isinstance(value, dict):  # a check across a group's fields
                where = env_name(item["loc"]) + ENV_NESTED_DELIMITER + "*"
            else:
                where = f"{env_name(item['loc'])}={value!r}"
            problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
        msg = "; ".join(problems) + f" (see `{ENV_PREFIX}*` in docs/configuration.md)"
        raise SettingsError(msg) from error
    except _SourceError as error:
        # A JSON-valued variable that is not JSON (CLIMATIK_EXTRA_CONTROLLERS=foo, say).
        raise SettingsError(f"{error}; give it as JSON, e.g. '[\"pkg.module:factory\"]'") from error


def load_controller_settings() -> ControllerSettings:
    """Read every controller's settings from the environment, refusing bad values with the
    variable's name, as ``load_settings`` does for the runtime's."""
    # Every field of ControllerSettings is a root: a new concern is one field there.
    roots: dict[str, type[BaseSettings]] = get_type_hints(ControllerSettings)
    read: dict[str, Any] = {}
    problems: list[str] = []
    for name, root in roots.items():
        try:
            read[name] = root()
        except ValidationError as error:
            prefix = str(root.model_config.get("env_prefix", ""))
            for item in error.errors():
                message = item["msg"].removeprefix("Value error, ")
                where = ENV_NESTED_DELIMITER.join(str(part).upper() for part in item["loc"])
                if isinstance(item["input"], dict):  # a check across the root's fields
                    problems.append(f"{prefix}*: {message}")
                    continue
                if not where.startswith(ENV_PREFIX):  # an alias is already a variable's name
                    where = prefix + where
                problems.append(f"{where}={item['input']!r}: {message}")
        except _SourceError as error:
            problems.append(f'{error}; give it as JSON, e.g. \'["a", "b"]\'')
    if problems:
        msg = "; ".join(problems) + f" (see `{ENV_PREFIX}*` in docs/configuration.md)"
        raise SettingsError(msg)
    return ControllerSettings(**read)
