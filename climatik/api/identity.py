"""The PowerCappingConfig resource's identity: its API group, version, kind and names.

The CRD generator, the reconcilers' resource handles and the whole-object model all name the
resource through these, so a rename is one edit here.
"""

from __future__ import annotations

GROUP = "powercapping.climatik-project.ai"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PowerCappingConfig"
PLURAL = "powercappingconfigs"
SINGULAR = "powercappingconfig"
SHORT_NAMES = ("pcc",)
LIST_KIND = "PowerCappingConfigList"
