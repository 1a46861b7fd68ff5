"""Every Kubernetes resource the controller reads or writes, named once: group, version, plural,
kind, and whether it lives in namespaces.

Kubernetes' own kinds and the third-party CRDs the controller acts on (KEDA's ScaledObject,
KServe's InferenceService) are here; the PowerCappingConfig's names are defined by the API that
generates its CRD (`climatik.api.identity`), and `climatik.reconcilers.resources` builds its
`Resource` from them. Object bodies take `apiVersion` and `kind` from these values, never from
literals of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    """A REST resource: API group, version, plural, and whether it lives in namespaces.

    `kind` names its objects (for bodies the controller writes); it takes no part in equality,
    so a resource named without it is the same informer key.
    """

    group: str
    version: str
    plural: str
    namespaced: bool = True
    kind: str = field(default="", compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path; a namespaced resource without a namespace lists across all of them."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


def custom(
    group: str, version: str, plural: str, *, namespaced: bool = True, kind: str = ""
) -> Resource:
    """A custom resource, e.g. ``custom("keda.sh", "v1alpha1", "scaledobjects")``."""
    return Resource(group, version, plural, namespaced, kind)


CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")
PODS = Resource("", "v1", "pods", kind="Pod")
NODES = Resource("", "v1", "nodes", namespaced=False, kind="Node")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False, kind="Namespace")
EVENTS = Resource("", "v1", "events", kind="Event")
SECRETS = Resource("", "v1", "secrets", kind="Secret")
DEPLOYMENTS = Resource("apps", "v1", "deployments", kind="Deployment")
JOBS = Resource("batch", "v1", "jobs", kind="Job")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", kind="EndpointSlice")
"""A Service's endpoints, which `climatik router` sends requests to."""
LEASES = Resource("coordination.k8s.io", "v1", "leases", kind="Lease")
HORIZONTAL_POD_AUTOSCALERS = Resource(
    "autoscaling", "v2", "horizontalpodautoscalers", kind="HorizontalPodAutoscaler"
)
SCALED_OBJECTS = custom("keda.sh", "v1alpha1", "scaledobjects", kind="ScaledObject")
"""KEDA's ScaledObject: its `spec.maxReplicaCount` is the ceiling the controller moves."""
VERTICAL_POD_AUTOSCALERS = custom(
    "autoscaling.k8s.io", "v1", "verticalpodautoscalers", kind="VerticalPodAutoscaler"
)
"""VPA's VerticalPodAutoscaler: its `spec.updatePolicy.updateMode` is held at `Initial` while
the target's racks are near their limits (`climatik.reconcilers.vpa_hold`)."""
INFERENCE_SERVICES = custom(
    "serving.kserve.io", "v1beta1", "inferenceservices", kind="InferenceService"
)
"""KServe's InferenceService: capped on `spec.predictor.maxReplicas` when it owns the
ScaledObject, since KServe reverts edits to objects it owns."""
