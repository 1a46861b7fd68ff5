"""The spec's `carbon` extension: carbon-aware capping, its provider and its goal.

Each provider needs its own fields (a zone, a region, a key); the CEL rules here and the
pydantic validators beside them refuse the same incomplete objects.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from climatik.api.base import (
    DATA_KEY_PATTERN,
    MAX_CAP_WATTS,
    UK_OUTWARD_POSTCODE,
    CrdModel,
    DnsName,
    IntensityGramsPerKWh,
    crd_rules,
)
from climatik.domain.config import CarbonFallback, CarbonProvider


class SecretKeySelector(CrdModel):
    """A key of a Secret in this namespace (no namespace field: no cross-namespace reads)."""

    name: DnsName = Field(description="Secret name in the config's namespace.")
    key: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=DATA_KEY_PATTERN)
    ] = Field(description="Key inside the Secret's data.")


class CarbonTargetType(enum.StrEnum):
    """How the grid intensity turns into a cap."""

    EMISSION_RATE = "EmissionRate"
    INTENSITY_BAND = "IntensityBand"


class CarbonTargetSpec(CrdModel):
    """A carbon goal: a steady emission rate, or a linear band between clean and dirty grids."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": "self.type != 'EmissionRate' || has(self.emissionRateGramsPerHour)",
                "message": "emissionRateGramsPerHour is required when type is EmissionRate",
                "fieldPath": ".emissionRateGramsPerHour",
                "reason": "FieldValueRequired",
            },
            {
                "rule": (
                    "self.type != 'IntensityBand' || "
                    "(has(self.cleanIntensityGramsPerKWh) && has(self.dirtyIntensityGramsPerKWh))"
                ),
                "message": (
                    "cleanIntensityGramsPerKWh and dirtyIntensityGramsPerKWh are required "
                    "when type is IntensityBand"
                ),
                "fieldPath": ".dirtyIntensityGramsPerKWh",
                "reason": "FieldValueRequired",
            },
            {
                "rule": (
                    "!has(self.cleanIntensityGramsPerKWh) || !has(self.dirtyIntensityGramsPerKWh)"
                    " || self.cleanIntensityGramsPerKWh < self.dirtyIntensityGramsPerKWh"
                ),
                "message": "cleanIntensityGramsPerKWh must be below dirtyIntensityGramsPerKWh",
                "fieldPath": ".cleanIntensityGramsPerKWh",
            },
        )
    )

    type: CarbonTargetType = Field(description="EmissionRate or IntensityBand.")
    emission_rate_grams_per_hour: Annotated[int, Field(gt=0, le=1_000_000_000)] | None = Field(
        default=None,
        description="EmissionRate: cap = rate / (intensity x PUE), in gCO2 per hour.",
    )
    clean_intensity_g_per_kwh: IntensityGramsPerKWh | None = Field(
        default=None,
        alias="cleanIntensityGramsPerKWh",
        description="IntensityBand: at or below this gCO2/kWh the full powerCapLimit applies.",
    )
    dirty_intensity_g_per_kwh: IntensityGramsPerKWh | None = Field(
        default=None,
        alias="dirtyIntensityGramsPerKWh",
        description="IntensityBand: at or above this gCO2/kWh the cap is floorWatts.",
    )

    @model_validator(mode="after")
    def _complete(self) -> CarbonTargetSpec:
        clean, dirty = self.clean_intensity_g_per_kwh, self.dirty_intensity_g_per_kwh
        if (
            self.type is CarbonTargetType.EMISSION_RATE
            and self.emission_rate_grams_per_hour is None
        ):
            raise ValueError("emissionRateGramsPerHour is required when type is EmissionRate")
        if self.type is CarbonTargetType.INTENSITY_BAND and (clean is None or dirty is None):
            raise ValueError(
                "cleanIntensityGramsPerKWh and dirtyIntensityGramsPerKWh are required "
                "when type is IntensityBand"
            )
        if clean is not None and dirty is not None and not clean < dirty:
            raise ValueError("cleanIntensityGramsPerKWh must be below dirtyIntensityGramsPerKWh")
        return self


class Carbon(CrdModel):
    """Carbon-aware capping: lower the cap while the grid is dirty."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": "self.provider != 'ElectricityMaps' || has(self.zone)",
                "message": "zone is required for the ElectricityMaps provider",
                "fieldPath": ".zone",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "self.provider != 'WattTime' || has(self.region)",
                "message": "region is required for the WattTime provider",
                "fieldPath": ".region",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "self.provider != 'Static' || has(self.staticIntensityGramsPerKWh)",
                "message": "staticIntensityGramsPerKWh is required for the Static provider",
                "fieldPath": ".staticIntensityGramsPerKWh",
                "reason": "FieldValueRequired",
            },
            {
                "rule": (
                    "!(self.provider in ['ElectricityMaps', 'WattTime']) || "
                    "has(self.apiKeySecretRef)"
                ),
                "message": "apiKeySecretRef is required for ElectricityMaps and WattTime",
                "fieldPath": ".apiKeySecretRef",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "!has(self.regionId) || !has(self.postcode)",
                "message": "set regionId or postcode, not both",
                "fieldPath": ".postcode",
                "reason": "FieldValueForbidden",
            },
            {
                "rule": (
                    "self.provider == 'UKNationalGrid' || "
                    "(!has(self.regionId) && !has(self.postcode))"
                ),
                "message": "regionId and postcode apply only to the UKNationalGrid provider",
                "fieldPath": ".regionId",
                "reason": "FieldValueForbidden",
            },
        )
    )

    provider: CarbonProvider = Field(
        description="UKNationalGrid (no key), ElectricityMaps, WattTime, or Static."
    )
    region_id: Annotated[int, Field(ge=1, le=17)] | None = Field(
        default=None, description="UKNationalGrid: regional id 1-17; unset: national."
    )
    postcode: (
        Annotated[str, StringConstraints(max_length=4, pattern=UK_OUTWARD_POSTCODE)] | None
    ) = Field(default=None, description="UKNationalGrid: outward postcode, e.g. RG10.")
    zone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="ElectricityMaps zone, e.g. DE or US-CAL-CISO."
    )
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="WattTime region, e.g. CAISO_NORTH."
    )
    static_intensity_g_per_kwh: IntensityGramsPerKWh | None = Field(
        default=None,
        alias="staticIntensityGramsPerKWh",
        description="Static: the fixed intensity in gCO2/kWh (tests, air-gapped sites).",
    )
    target: CarbonTargetSpec = Field(description="The carbon goal that sets the cap.")
    floor_watts: Annotated[int, Field(ge=0, le=MAX_CAP_WATTS)] = Field(
        default=0, description="The cap never drops below this for carbon (watts)."
    )
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = Field(
        default=1.0, description="Power usage effectiveness multiplying IT power."
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding the API key (ElectricityMaps) or `user:password` (WattTime)."
        ),
    )
    max_age_seconds: Annotated[int, Field(ge=60, le=86_400)] = Field(
        default=3600, description="Readings older than this count as missing."
    )
    fallback: CarbonFallback = Field(
        default=CarbonFallback.STATIC_CAP,
        description="Cap while data is missing: StaticCap (powerCapLimit) or FloorCap.",
    )

    @model_validator(mode="after")
    def _provider_fields(self) -> Carbon:
        provider = self.provider
        if provider is CarbonProvider.ELECTRICITY_MAPS and self.zone is None:
            raise ValueError("zone is required for the ElectricityMaps provider")
        if provider is CarbonProvider.WATT_TIME and self.region is None:
            raise ValueError("region is required for the WattTime provider")
        if provider is CarbonProvider.STATIC and self.static_intensity_g_per_kwh is None:
            raise ValueError("staticIntensityGramsPerKWh is required for the Static provider")
        keyed = {CarbonProvider.ELECTRICITY_MAPS, CarbonProvider.WATT_TIME}
        if provider in keyed and self.api_key_secret_ref is None:
            raise ValueError("apiKeySecretRef is required for ElectricityMaps and WattTime")
        if self.region_id is not None and self.postcode is not None:
            raise ValueError("set regionId or postcode, not both")
        uk_only = self.region_id is not None or self.postcode is not None
        if uk_only and provider is not CarbonProvider.UK_NATIONAL_GRID:
            raise ValueError("regionId and postcode apply only to the UKNationalGrid provider")
        return self
