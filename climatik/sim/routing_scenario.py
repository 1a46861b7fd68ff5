"""Routing scenarios: one service's replicas, request by request (see docs/simulate.md, Routing).

The fleet twin's scenarios describe a room of identical servers whose services are fluids; a
routing scenario describes what per-request routing needs instead: the replicas of one service,
each with its GPU generation and clock, the traffic and request lengths, what the router reads
(the scrape interval and rate window) and the routing policies to compare. Unknown keys are
refused and every error names its field, as in the fleet twin's scenarios; built-in routing
scenarios live in `scenarios/routing/`, apart from the fleet twin's, so neither loader sees the
other's files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from climatik.domain.errors import describe_yaml_error
from climatik.domain.paths import field_path
from climatik.sim.scenario import (
    GPU_MODELS,
    MODEL_CLASSES,
    GpuModel,
    ModelClass,
    ScenarioError,
    Slo,
    Traffic,
)

BUILTIN_PACKAGE = "climatik.sim"
BUILTIN_FOLDER = ("scenarios", "routing")

ROUTING_POLICIES = ("round-robin", "least-loaded", "tokens-per-watt", "oracle")
"""`oracle` is the tokens-per-watt picker fed exact, instant state: a labelled yardstick."""

DEFAULT_ROUTING_POLICIES = ("round-robin", "least-loaded", "tokens-per-watt", "oracle")

GPU_SLOWDOWN: dict[str, tuple[float, float]] = {
    "H100": (1.0, 1.0),
    "H200": (1.0, 3.35 / 4.8),
    "A100": (989.0 / 312.0, 3.35 / 2.039),
}
"""(prefill, decode) time relative to an H100 SXM at the same clock ratio, from the datasheets:
prefill is compute bound (dense BF16 tensor TFLOPS: H100 989, A100 312), decode memory bound
(HBM TB/s: H100 3.35, H200 4.8, A100 80 GB 2.039). The model classes' step times are H100's."""


def _known_policy(name: str) -> str:
    if name not in ROUTING_POLICIES:
        raise PydanticCustomError(
            "unknown_policy",
            f"unknown routing policy {name!r}; known: {', '.join(ROUTING_POLICIES)}",
        )
    return name


RoutingPolicyName = Annotated[str, AfterValidator(_known_policy)]

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicaGroup(_Strict):
    """Replicas of the service alike in hardware and clock: one replica is one 8-GPU server."""

    name: Annotated[str, Field(min_length=1)]
    count: Annotated[int, Field(ge=1, le=64)] = 1
    gpu_model: Literal["H100", "H200", "A100"] = "H100"
    clock_mhz: Positive | None = None
    """The SM clock the replicas run at (a tuned or locked clock); default the GPU's maximum."""
    prefill_slowdown: Positive | None = None
    """Prefill time relative to an H100 at the same clock ratio; default from `GPU_SLOWDOWN`."""
    decode_slowdown: Positive | None = None
    """Decode step time relative to an H100 at the same clock ratio; default from
    `GPU_SLOWDOWN`."""

    @model_validator(mode="after")
    def _clock_in_range(self) -> ReplicaGroup:
        gpu = self.gpu
        if self.clock_mhz is not None and not (
            gpu.min_clock_mhz <= self.clock_mhz <= gpu.max_clock_mhz
        ):
            why = (
                f"{self.clock_mhz:g} MHz is outside the {self.gpu_model}'s clock range "
                f"({gpu.min_clock_mhz:g}-{gpu.max_clock_mhz:g} MHz)"
            )
            raise ValidationError.from_exception_data(
                "ReplicaGroup",
                [
                    {
                        "type": PydanticCustomError("clock_out_of_range", why),
                        "loc": ("clock_mhz",),
                        "input": self.clock_mhz,
                    }
                ],
            )
        return self

    @property
    def gpu(self) -> GpuModel:
        """The GPU's power curve (the fleet twin's `GPU_MODELS`)."""
        return GPU_MODELS[self.gpu_model]

    @property
    def clock_ratio(self) -> float:
        """f / f_max of the replicas' GPUs."""
        gpu = self.gpu
        return (self.clock_mhz or gpu.max_clock_mhz) / gpu.max_clock_mhz

    @property
    def slowdown(self) -> tuple[float, float]:
        """(prefill, decode) time relative to an H100 at the same clock ratio."""
        prefill, decode = GPU_SLOWDOWN[self.gpu_model]
        return (self.prefill_slowdown or prefill, self.decode_slowdown or decode)


class Server(_Strict):
    """The server around the GPUs: P_srv = P_base + k * sum(P_g - P_idle) + sum(P_g)."""

    gpus: Annotated[int, Field(ge=1, le=16)] = 8
    base_w: NonNegative = 2200.0
    gpu_overhead: NonNegative = 0.48


class Requests(_Strict):
    """Prompt and output lengths: lognormal around their means (the Azure LLM traces' long
    tails), clipped to [1, 8 x mean]."""

    prompt_tokens: Annotated[int, Field(ge=1)] = 1024
    output_tokens: Annotated[int, Field(ge=1)] = 256
    length_sigma: Annotated[float, Field(ge=0, le=2)] = 0.6
    """Standard deviation of the lengths' logarithm; 0 gives every request the means."""
    kv_cache_tokens: Annotated[int, Field(ge=1)] = 1_200_000
    """Tokens a replica's KV cache holds (a 70B model at TP8 on 8 x 80 GB keeps about 400 GB
    for it, at 320 kB per token)."""


class Scrape(_Strict):
    """What the router reads and how old it is: vLLM's and the GPUs' counters, scraped by
    Prometheus every `interval_s`, tokens per joule as a rate over `rate_window_s`."""

    interval_s: Positive = 15.0
    rate_window_s: Positive = 60.0


class RouterSettings(_Strict):
    """`RoutingSettings` of the picker, as a deployer would set them (max_batch is vLLM's
    `--max-num-seqs`, the model class's `max_batch`, unless given)."""

    max_reading_age_s: Positive = 15.0
    kv_cache_limit: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_batch: Annotated[int, Field(ge=1)] | None = None
    tpot_budget_s: Positive | Literal["slo"] | None = "slo"
    """Time per output token the picker keeps each replica within (`slo`: the scenario's
    `slo.tbt_s`; null: batch slots only)."""
    ttft_budget_s: Positive | Literal["slo"] | None = "slo"
    """Mean time to first token past which a replica has no room (`slo`: `slo.ttft_s`; null:
    not judged)."""


class RoutingScenario(_Strict):
    """One service's replicas, its traffic, what the router reads, the policies compared."""

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    duration_h: Annotated[float, Field(gt=0, le=7 * 24)] = 6.0
    start_hour: Annotated[float, Field(ge=0)] = 0.0
    """Hour since Monday 00:00 the run starts at: where in the traffic's week it falls."""
    seed: int = 7
    """Seed of the arrival times and request lengths (the rate keeps `traffic.seed`)."""
    model: Literal["llama-70b-tp8", "llama-8b-dp8"] = "llama-70b-tp8"
    replicas: Annotated[list[ReplicaGroup], Field(min_length=1)]
    server: Server = Server()
    requests: Requests = Requests()
    slo: Slo = Slo()
    traffic: Traffic = Traffic()
    queue_timeout_s: Positive = 120.0
    """A request still in a replica's queue after this long is given up (a client timeout)."""
    decode_power: Literal["flat", "per-token"] = "flat"
    """How a GPU's decode draw depends on its batch: `flat`, the draw of SIMULATOR.md's decode
    phase whenever it decodes at all (Splitwise measured decode power nearly flat in batch
    size); `per-token`, the fleet twin's fluid reading, in proportion to its tokens per second
    over those of a full batch (so a token costs the same energy at any batch)."""
    scrape: Scrape = Scrape()
    router: RouterSettings = RouterSettings()
    policies: list[RoutingPolicyName] = list(DEFAULT_ROUTING_POLICIES)

    @model_validator(mode="after")
    def _unique_groups(self) -> RoutingScenario:
        seen: set[str] = set()
        for i, group in enumerate(self.replicas):
            if group.name in seen:
                why = f"{group.name!r} names two replica groups; names must be unique"
                raise ValidationError.from_exception_data(
                    "RoutingScenario",
                    [
                        {
                            "type": PydanticCustomError("scenario_inconsistent", why),
                            "loc": ("replicas", i, "name"),
                            "input": group.name,
                        }
                    ],
                )
            seen.add(group.name)
        return self

    @property
    def model_class(self) -> ModelClass:
        """Step times and batch of the service's model (H100's)."""
        return MODEL_CLASSES[self.model]


def builtin_routing_names() -> list[str]:
    """Names of the routing scenarios shipped with the package."""
    folder = resources.files(BUILTIN_PACKAGE).joinpath(*BUILTIN_FOLDER)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def parse_routing_scenario(data: object, origin: str = "<memory>") -> RoutingScenario:
    """Validate a parsed YAML document as a routing scenario."""
    if not isinstance(data, dict):
        msg = f"invalid routing scenario {origin}: the document must be a mapping"
        raise ScenarioError(msg)
    try:
        return RoutingScenario.model_validate(data)
    except ValidationError as error:
        lines = [f"invalid routing scenario {origin}:"]
        lines += [f"  {field_path(e['loc']) or 'scenario'}: {e['msg']}" for e in error.errors()]
        raise ScenarioError("\n".join(lines)) from None


def load_routing_scenario(name_or_path: str) -> RoutingScenario:
    """A built-in routing scenario by name, or a routing scenario file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            msg = f"routing scenario file {name_or_path} does not exist"
            raise ScenarioError(msg)
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        entry = resources.files(BUILTIN_PACKAGE).joinpath(*BUILTIN_FOLDER, f"{name_or_path}.yaml")
        if not entry.is_file():
            known = ", ".join(builtin_routing_names())
            msg = f"no built-in routing scenario named {name_or_path!r}; built-in: {known}"
            raise ScenarioError(msg)
        text, origin = entry.read_text(encoding="utf-8"), f"built-in {name_or_path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        msg = f"routing scenario is not valid YAML: {describe_yaml_error(error, origin)}"
        raise ScenarioError(msg) from None
    return parse_routing_scenario(data, origin)
