"""Scenario files for the twin: a validated, documented schema (see docs/simulate.md).

A scenario says what the datacenter looks like (racks, servers, GPUs, airflow, recirculation),
what limits it has (site cap, rack limits, redline), what it serves (services with model class,
SLOs and traffic) and what grid it sits on (carbon). Every field has a default taken from
SIMULATOR.md, so a scenario file only states what differs.

Guarantees: unknown keys are refused; every error names the field it is about as a path such
as `services[1].traffic.peak_rps`, checks across fields included (`services[1].name` for a
repeated name); built-in scenarios are package data, found by name from any working directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from climatik.domain.errors import UserError, describe_yaml_error
from climatik.domain.paths import field_path
from climatik.sim import physics
from climatik.sim.policy_specs import DEFAULT_POLICIES, POLICY_NAMES

BUILTIN_PACKAGE = "climatik.sim"
BUILTIN_FOLDER = "scenarios"


def _known_policy(name: str) -> str:
    """Refuse a policy `--policies` would refuse, naming the ones the twin knows."""
    if name not in POLICY_NAMES:
        raise PydanticCustomError(
            "unknown_policy", f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}"
        )
    return name


PolicyName = Annotated[str, AfterValidator(_known_policy)]
"""A policy name, checked per item so an error names its index (`policies[2]`)."""

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str, object]
"""Where a check across fields found a problem (relative to the model), what is wrong, the value."""


def _refuse(model: str, problems: list[Problem]) -> None:
    """Raise every problem of a model at once, each at the field it is about.

    A model validator's ValueError would be reported at the model itself (`services[1]`, or no
    path at all for the scenario). pydantic-core merges a ValidationError raised in a validator
    into the outer one with the outer path put in front, so a check that needs several fields
    still names the one that is wrong (`services[1].min_replicas`). pydantic's docs advise
    raising ValueError instead, which cannot carry a path: the unit tests pin the merged paths.
    """
    if problems:
        raise ValidationError.from_exception_data(
            model,
            [
                InitErrorDetails(
                    type=PydanticCustomError("scenario_inconsistent", message),
                    loc=loc,
                    input=value,
                )
                for loc, message, value in problems
            ],
        )


def _n(value: float) -> str:
    """A number as a person writes it in a message: 20000, 0.35, 1.5e-06."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class GpuModel(_Strict):
    """Power curve of one GPU (SIMULATOR.md, Hardware and power)."""

    idle_w: Positive = 75.0
    prefill_max_w: Positive = 700.0
    decode_max_w: Positive = 380.0
    max_clock_mhz: Positive = 1980.0
    min_clock_mhz: Positive = 600.0
    gamma: Annotated[float, Field(ge=1.0, le=4.0)] = 1.6

    @model_validator(mode="after")
    def _ordered(self) -> GpuModel:
        problems: list[Problem] = []
        if not self.idle_w < self.decode_max_w:
            why = f"{_n(self.idle_w)} W must be below decode_max_w ({_n(self.decode_max_w)} W)"
            problems.append((("idle_w",), why, self.idle_w))
        elif self.decode_max_w > self.prefill_max_w:
            why = (
                f"{_n(self.decode_max_w)} W must not exceed prefill_max_w "
                f"({_n(self.prefill_max_w)} W)"
            )
            problems.append((("decode_max_w",), why, self.decode_max_w))
        if not self.min_clock_mhz < self.max_clock_mhz:
            why = (
                f"{_n(self.min_clock_mhz)} MHz must be below max_clock_mhz "
                f"({_n(self.max_clock_mhz)} MHz)"
            )
            problems.append((("min_clock_mhz",), why, self.min_clock_mhz))
        _refuse("GpuModel", problems)
        return self


GPU_MODELS: dict[str, GpuModel] = {
    "H100": GpuModel(),
    "H200": GpuModel(),
    "A100": GpuModel(
        idle_w=63.0,
        prefill_max_w=400.0,
        decode_max_w=250.0,
        max_clock_mhz=1410.0,
        min_clock_mhz=510.0,
    ),
}


class ModelClass(_Strict):
    """Throughput of one replica (one server) of a model (SIMULATOR.md, Throughput)."""

    decode_step_s_batch1: Positive = 0.030
    decode_step_s_max_batch: Positive = 0.050
    max_batch: Annotated[int, Field(ge=1)] = 64
    prefill_base_s: NonNegative = 0.047
    prefill_s_per_1k_tokens: NonNegative = 0.0455
    memory_bound_beta: Fraction = 0.8
    startup_s: NonNegative = 60.0


MODEL_CLASSES: dict[str, ModelClass] = {
    "llama-70b-tp8": ModelClass(),
    # An 8B model served data-parallel on the 8 GPUs of a server: faster steps, bigger batches.
    "llama-8b-dp8": ModelClass(
        decode_step_s_batch1=0.008,
        decode_step_s_max_batch=0.020,
        max_batch=256,
        prefill_base_s=0.010,
        prefill_s_per_1k_tokens=0.009,
        startup_s=30.0,
    ),
}


class Recirculation(_Strict):
    """Heat recirculation between chassis: an explicit matrix or one generated from geometry.

    `local` (the default) lands most of a server's recirculated heat on its own and nearby
    inlets, decaying with distance, as the CFD-derived cross-interference matrices of Tang et
    al. (2006, 2008) show; `uniform` is the first generator, which spreads it over the whole
    row (the built-in scenarios name it, so their figures stay reproducible).
    """

    model: Literal["local", "uniform"] = "local"
    matrix: list[list[NonNegative]] | None = None
    """Row i: share of chassis i's exhaust reaching each chassis' inlet (rows sum to < 1)."""
    min_fraction: Fraction = 0.05
    max_fraction: Fraction = 0.35
    seed: int = 11
    rack_decay: Positive = 0.7
    """`local`: distance, in racks along the row, over which the heat reaching an inlet falls
    by a factor e."""
    rise_decay: Positive = 0.5
    """`local`: the same along the rack upwards (in rack heights): hot air rises, so heat
    reaches inlets above its source farther than those below."""
    fall_decay: Positive = 0.15
    """`local`: the same downwards (in rack heights)."""
    jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.05
    """`local`: random spread (seeded) of each source's recirculated share, as a fraction of
    the band; 0 gives a matrix as symmetric as the room."""

    @model_validator(mode="after")
    def _bounds(self) -> Recirculation:
        problems: list[Problem] = []
        if self.min_fraction > self.max_fraction:
            why = f"{_n(self.min_fraction)} exceeds max_fraction ({_n(self.max_fraction)})"
            problems.append((("min_fraction",), why, self.min_fraction))
        rows = len(self.matrix or [])
        for i, row in enumerate(self.matrix or []):
            if len(row) != rows:
                why = f"row has {len(row)} values but the matrix has {rows} rows; it must be square"
                problems.append((("matrix", i), why, row))
            elif sum(row) >= 1.0:
                why = (
                    f"row sums to {_n(sum(row))}: a server cannot send all its exhaust to "
                    "inlets, so every row must sum to less than 1"
                )
                problems.append((("matrix", i), why, row))
        _refuse("Recirculation", problems)
        return self


class Racks(_Strict):
    """The machine room: identical racks of identical GPU servers."""

    count: Annotated[int, Field(ge=1, le=512)] = 2
    servers_per_rack: Annotated[int, Field(ge=1, le=64)] = 4
    gpus_per_server: Annotated[int, Field(ge=1, le=16)] = 8
    gpu_model: Literal["H100", "H200", "A100"] = "H100"
    gpu: GpuModel | None = None
    """Overrides the named model's power curve."""
    server_base_w: NonNegative = 2200.0
    server_gpu_overhead: NonNegative = 0.48
    airflow_m3_per_s: Positive = 0.5
    recirculation: Recirculation = Recirculation()
    zones_per_rack: Annotated[int, Field(ge=1)] = 2

    @model_validator(mode="after")
    def _matrix_fits(self) -> Racks:
        matrix = self.recirculation.matrix
        if matrix is not None and len(matrix) != self.servers:
            why = (
                f"is {len(matrix)}x{len(matrix)} but the room has {self.servers} servers: "
                "it needs one row and one column per server"
            )
            _refuse("Racks", [(("recirculation", "matrix"), why, matrix)])
        return self

    @property
    def servers(self) -> int:
        """Servers in the whole room."""
        return self.count * self.servers_per_rack

    @property
    def gpu_curve(self) -> GpuModel:
        """The effective GPU power curve."""
        return self.gpu or GPU_MODELS[self.gpu_model]

    @property
    def idle_server_w(self) -> float:
        """What a server draws with every GPU idle: the twin's power model at zero load.

        No policy can bring a server below it, so it is the floor under any power cap; the
        twin and the scenario checks both read it here.
        """
        gpu = self.gpu_curve
        return float(
            physics.server_power_w(
                gpu.idle_w,
                self.gpus_per_server,
                gpu.idle_w,
                self.server_base_w,
                self.server_gpu_overhead,
            )
        )

    @property
    def nameplate_server_w(self) -> float:
        """What a server draws with every GPU at full prefill power: nameplate provisioning."""
        gpu = self.gpu_curve
        return float(
            physics.server_power_w(
                gpu.prefill_max_w,
                self.gpus_per_server,
                gpu.idle_w,
                self.server_base_w,
                self.server_gpu_overhead,
            )
        )


class CarbonBand(_Strict):
    """Carbon-aware cap for `climatik`: full cap at or below clean, floor at or above dirty."""

    clean_g_per_kwh: NonNegative = 120.0
    dirty_g_per_kwh: NonNegative = 300.0
    floor_fraction: Fraction = 0.7

    @model_validator(mode="after")
    def _ordered(self) -> CarbonBand:
        if not self.clean_g_per_kwh < self.dirty_g_per_kwh:
            why = (
                f"{_n(self.dirty_g_per_kwh)} g/kWh must be above clean_g_per_kwh "
                f"({_n(self.clean_g_per_kwh)} g/kWh)"
            )
            _refuse("CarbonBand", [(("dirty_g_per_kwh",), why, self.dirty_g_per_kwh)])
        return self


class Caps(_Strict):
    """The limits: one site (room) power cap, optional rack limits, and the redline."""

    site_cap_w: Positive
    rack_max_w: Positive | None = None
    rack_max_inlet_c: float | None = None
    carbon: CarbonBand | None = None


class Cooling(_Strict):
    """Supply-temperature control and cooling power (SIMULATOR.md, Heat and cooling)."""

    redline_c: float = 27.0
    min_supply_c: float = 10.0
    max_supply_c: float = 27.0
    fixed_supply_c: float | None = None
    """A cooling unit that holds this supply air whatever the inlets (no control on the
    hottest inlet): peak inlet and time above the redline then differ between placements."""
    supply_guard_c: NonNegative = 0.5
    supply_slew_c_per_min: Positive = 1.0
    inlet_tau_s: Positive = 120.0
    distribution_loss_fraction: Annotated[float, Field(ge=0, le=0.5)] = 0.07
    air_density_kg_per_m3: Positive = 1.2
    air_heat_capacity_j_per_kg_k: Positive = 1005.0

    @model_validator(mode="after")
    def _ordered(self) -> Cooling:
        if not self.min_supply_c <= self.max_supply_c:
            why = f"{_n(self.min_supply_c)} °C exceeds max_supply_c ({_n(self.max_supply_c)} °C)"
            _refuse("Cooling", [(("min_supply_c",), why, self.min_supply_c)])
        fixed = self.fixed_supply_c
        if fixed is not None and not self.min_supply_c <= fixed <= self.max_supply_c:
            why = (
                f"{_n(fixed)} °C is outside the unit's range "
                f"({_n(self.min_supply_c)}-{_n(self.max_supply_c)} °C)"
            )
            _refuse("Cooling", [(("fixed_supply_c",), why, fixed)])
        return self

    @property
    def supply_limits_c(self) -> tuple[float, float, float]:
        """(aim, lowest, highest): the supply air is aim - hottest rise, clamped to the other
        two; a fixed supply is all three, so it never moves."""
        if self.fixed_supply_c is not None:
            fixed = self.fixed_supply_c
            return fixed, fixed, fixed
        return self.redline_c - self.supply_guard_c, self.min_supply_c, self.max_supply_c


class Outage(_Strict):
    """A window in which the metrics pipeline returns no data."""

    start_h: NonNegative
    duration_h: Positive


class Measurement(_Strict):
    """How the policies see power: a Prometheus scrape with lag, a rate window and noise."""

    lag_s: NonNegative = 15.0
    window_s: Positive = 30.0
    noise_fraction: Fraction = 0.01
    noise_correlation_s: Positive = 1.0
    """Power noise decorrelates over this time, so a 10-s average keeps 1/sqrt(10) of it."""
    outages: list[Outage] = []


class Slo(_Strict):
    """Latency objectives of a service class."""

    ttft_s: Positive = 2.0
    tbt_s: Positive = 0.1


class Traffic(_Strict):
    """Generated arrivals (diurnal, weekly, bursty) or a CSV trace (`hour,requests_per_s`)."""

    peak_rps: Positive = 20.0
    trough_fraction: Fraction = 0.3
    peak_hour: Annotated[float, Field(ge=0, lt=24)] = 14.0
    weekend_fraction: Fraction = 0.8
    bursts_per_day: NonNegative = 4.0
    burst_multiplier: Annotated[float, Field(ge=1)] = 1.4
    burst_duration_s: Positive = 600.0
    noise_fraction: Fraction = 0.05
    trace_file: str | None = None
    seed: int = 1


class Autoscaler(_Strict):
    """KEDA/HPA behaviour: target utilisation, scale-down stabilisation."""

    target_utilisation: Annotated[float, Field(gt=0, le=1)] = 0.7
    scale_down_window_s: NonNegative = 300.0
    queue_drain_s: Positive = 60.0


class Service(_Strict):
    """One inference service (a Deployment scaled by a KEDA ScaledObject)."""

    name: Annotated[str, Field(min_length=1)]
    model: Literal["llama-70b-tp8", "llama-8b-dp8"] = "llama-70b-tp8"
    service_class: Literal["interactive", "batch"] = "interactive"
    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 8
    prompt_tokens: Annotated[int, Field(ge=1)] = 1024
    output_tokens: Annotated[int, Field(ge=1)] = 256
    slo: Slo = Slo()
    traffic: Traffic = Traffic()
    autoscaler: Autoscaler = Autoscaler()
    queue_timeout_s: Positive = 120.0
    priority: int = 0
    """Capping priority: under a tight cap a higher one keeps its replicas first; services of
    equal priority share by efficiency (tokens per joule)."""
    deferrable: bool = False
    """Its requests may wait for a cleaner grid until their deadline, the sooner of
    `slo.ttft_s` and `queue_timeout_s`: policies that follow carbon plan its work into the
    cleanest forecast slots before it (`steps_plan`), and its queue is kept by age."""

    @model_validator(mode="after")
    def _ordered(self) -> Service:
        if self.min_replicas > self.max_replicas:
            why = f"{self.min_replicas} exceeds max_replicas ({self.max_replicas})"
            _refuse("Service", [(("min_replicas",), why, self.min_replicas)])
        return self

    @property
    def deadline_s(self) -> float:
        """How long a deferrable request may wait: the sooner of its TTFT objective and its
        queue timeout (the carbon bound's deadline too)."""
        return min(self.slo.ttft_s, self.queue_timeout_s)

    @property
    def model_class(self) -> ModelClass:
        """The throughput parameters of the service's model."""
        return MODEL_CLASSES[self.model]


class GeneratedCarbon(_Strict):
    """A GB-2020-like intensity series: daily swing, weather drift, clipped to a range."""

    mean_g_per_kwh: NonNegative = 215.0
    min_g_per_kwh: NonNegative = 64.0
    max_g_per_kwh: NonNegative = 395.0
    daily_swing_fraction: Fraction = 0.4
    """Peak-to-trough of the daily cycle as a share of the mean; with the weather drift on top,
    the mean daily swing comes to about 60 % (GB 2020)."""
    weather_fraction: Fraction = 0.3
    trough_hour: Annotated[float, Field(ge=0, lt=24)] = 4.0
    seed: int = 3


class Carbon(_Strict):
    """Grid carbon intensity: generated, or a CSV file `hour,intensity_g_per_kwh`."""

    generated: GeneratedCarbon = GeneratedCarbon()
    file: str | None = None
    slot_s: Positive = 1800.0
    forecast_error_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Standard error of the provider's forecast, as a share of the value, reached at 24 h
    ahead (growing with the square root of the lead time; the current slot is exact). The
    deferrable-work planner sees this forecast, not the series (SIMULATOR.md: 5-15 %)."""


class Scenario(_Strict):
    """A whole twin run."""

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    duration_h: Annotated[float, Field(gt=0, le=24 * 31)] = 24.0
    step_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    control_interval_s: Positive = 30.0
    seed: int = 7
    racks: Racks = Racks()
    caps: Caps
    cooling: Cooling = Cooling()
    measurement: Measurement = Measurement()
    services: Annotated[list[Service], Field(min_length=1)]
    carbon: Carbon = Carbon()
    policies: list[PolicyName] = list(DEFAULT_POLICIES)
    """Policies compared when `--policies` is not given: any name `climatik simulate --list`
    shows."""
    source_dir: str | None = None
    """Folder the scenario was read from (relative trace and carbon files resolve against it)."""

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        problems: list[Problem] = []
        first: dict[str, int] = {}
        for i, service in enumerate(self.services):
            if service.name in first:
                why = (
                    f"{service.name!r} is already the name of services[{first[service.name]}]; "
                    "service names must be unique"
                )
                problems.append((("services", i, "name"), why, service.name))
            first.setdefault(service.name, i)
        if self.control_interval_s < self.step_s:
            why = (
                f"{_n(self.control_interval_s)} s is shorter than step_s ({_n(self.step_s)} s): "
                "the policies decide at most once a step"
            )
            problems.append((("control_interval_s",), why, self.control_interval_s))
        problems += self._below_idle_floor()
        problems += self._replicas_beyond_servers()
        _refuse("Scenario", problems)
        return self

    def _below_idle_floor(self) -> list[Problem]:
        """Caps no policy can meet: an idle server still draws its idle power.

        The site cap covers the IT power of the whole room, a rack limit that of one rack.
        """
        racks, caps = self.racks, self.caps
        idle_w = racks.idle_server_w
        problems: list[Problem] = []
        room_w = racks.servers * idle_w
        if caps.site_cap_w < room_w:
            why = (
                f"{_n(caps.site_cap_w)} W is below the room's idle floor of {_n(room_w)} W "
                f"({racks.servers} servers at {_n(idle_w)} W idle each)"
            )
            problems.append((("caps", "site_cap_w"), why, caps.site_cap_w))
        rack_w = racks.servers_per_rack * idle_w
        if caps.rack_max_w is not None and caps.rack_max_w < rack_w:
            why = (
                f"{_n(caps.rack_max_w)} W is below a rack's idle floor of {_n(rack_w)} W "
                f"({racks.servers_per_rack} servers at {_n(idle_w)} W idle each)"
            )
            problems.append((("caps", "rack_max_w"), why, caps.rack_max_w))
        return problems

    def _replicas_beyond_servers(self) -> list[Problem]:
        """Minimums the room cannot hold: a replica takes a whole server, and the twin keeps
        every service at its minimum at the same time."""
        servers = self.racks.servers
        problems: list[Problem] = []
        for i, service in enumerate(self.services):
            if service.min_replicas > servers:
                why = (
                    f"{service.min_replicas} replicas need {service.min_replicas} servers "
                    f"(one replica per server) but the room has {servers}"
                )
                problems.append((("services", i, "min_replicas"), why, service.min_replicas))
        total = sum(s.min_replicas for s in self.services)
        if not problems and total > servers:
            parts = " + ".join(f"{s.name} {s.min_replicas}" for s in self.services)
            why = (
                f"min_replicas add up to {total} ({parts}) but the room has {servers} servers: "
                "every service keeps its minimum at once, one replica per server"
            )
            problems.append((("services",), why, total))
        return problems

    @property
    def steps(self) -> int:
        """Number of fixed time steps."""
        return max(1, round(self.duration_h * 3600.0 / self.step_s))


class ScenarioError(UserError, ValueError):
    """A scenario that cannot be used; the message names the field and says what is wrong."""


def _format_validation(error: ValidationError, origin: str) -> str:
    lines = [f"invalid scenario {origin}:"]
    for item in error.errors():
        # Every check is attached to a field, so a path is always there; the fallback only
        # keeps a message readable should pydantic ever report one at the document itself.
        where = field_path(item["loc"]) or "scenario"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_scenario(
    data: object, origin: str = "<memory>", source_dir: str | None = None
) -> Scenario:
    """Validate a parsed YAML document as a scenario."""
    if not isinstance(data, dict):
        msg = f"invalid scenario {origin}: the document must be a mapping"
        raise ScenarioError(msg)
    if source_dir is not None:
        data = {**data, "source_dir": source_dir}
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise ScenarioError(_format_validation(error, origin)) from None


def builtin_names() -> list[str]:
    """Names of the scenarios shipped with the package."""
    folder = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_FOLDER)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def load_scenario(name_or_path: str) -> Scenario:
    """Load a built-in scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            msg = f"scenario file {name_or_path} does not exist"
            raise ScenarioError(msg)
        text = path.read_text(encoding="utf-8")
        origin, source_dir = str(path), str(path.resolve().parent)
    else:
        folder = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_FOLDER)
        entry = folder.joinpath(f"{name_or_path}.yaml")
        if not entry.is_file():
            known = ", ".join(builtin_names())
            msg = f"no built-in scenario named {name_or_path!r}; built-in: {known}"
            raise ScenarioError(msg)
        text = entry.read_text(encoding="utf-8")
        origin = f"built-in {name_or_path}"
        source_dir = str(Path(str(entry)).parent)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        msg = f"scenario is not valid YAML: {describe_yaml_error(error, origin)}"
        raise ScenarioError(msg) from None
    return parse_scenario(data, origin, source_dir)
