"""What every PowerCappingConfig model is written in: the `CrdModel` base, bounds and patterns.

The bounds, RE2 patterns and constrained scalar types here are shared by the spec and status
models, so the API server (through the generated CRD) and pydantic (when the controller reads an
object) enforce the same limits. Every string and list is bounded so CEL rules stay within the
API server's cost budget.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

# Plausible physical ranges. 100 MW is a large datacenter campus; 1 MW a very dense rack row
# feed; temperatures are rack inlet/exhaust limits, where anything above 100 °C is a typo.
MAX_CAP_WATTS = 100_000_000
MAX_RACK_WATTS = 1_000_000
MIN_CELSIUS = 1
MAX_CELSIUS = 100

# RE2/ECMA-compatible patterns (the API server evaluates them with Go's regexp).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HTTP_URL = r"^https?://[^\s/?#]+([/?#][^\s]*)?$"
RACK_ID = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
CAMEL_CASE = r"^[A-Z][A-Za-z0-9]*$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
UK_OUTWARD_POSTCODE = r"^[A-Z]{1,2}[0-9][A-Z0-9]?$"

DnsName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
HttpUrl = Annotated[str, StringConstraints(min_length=8, max_length=2048, pattern=HTTP_URL)]
PromQL = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Watts = Annotated[int, Field(gt=0, le=MAX_CAP_WATTS)]
RackWatts = Annotated[int, Field(gt=0, le=MAX_RACK_WATTS)]
Celsius = Annotated[int, Field(ge=MIN_CELSIUS, le=MAX_CELSIUS)]
Percent = Annotated[int, Field(ge=1, le=100)]
IntensityGramsPerKWh = Annotated[int, Field(ge=0, le=5000)]


def crd_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """The `x-kubernetes-validations` extension for a model's schema."""
    return {"x-kubernetes-validations": list(rules)}


class CrdModel(BaseModel):
    """Base of every API model: camelCase on the wire, immutable, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        # Defaults are checked like input, so a default the API server would refuse fails here.
        validate_default=True,
    )
