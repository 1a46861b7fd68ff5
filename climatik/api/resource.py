"""One whole PowerCappingConfig object as the API server stores it: metadata, spec and status.

The CRD is generated from the spec and status models alone; this model reads a complete object
(a file, a dry run) and checks it the way the API server would.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from climatik.api.base import CrdModel
from climatik.api.spec import PowerCappingConfigSpec
from climatik.api.status_models import PowerCappingConfigStatus


class ObjectMeta(BaseModel):
    """The few metadata fields the controller reads; the API server owns the rest."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    namespace: str = "default"
    generation: int = 0
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class PowerCappingConfig(CrdModel):
    """A whole PowerCappingConfig object, as stored by the API server."""

    api_version: Literal["powercapping.climatik-project.ai/v1"] = (
        "powercapping.climatik-project.ai/v1"
    )
    kind: Literal["PowerCappingConfig"] = "PowerCappingConfig"
    metadata: ObjectMeta
    spec: PowerCappingConfigSpec
    status: PowerCappingConfigStatus | None = None

    # The schema generator walks only spec and status; metadata is the API server's.
    crd_walked_fields: ClassVar[tuple[str, ...]] = ("spec", "status")
