"""The PowerCappingConfig resource, and the annotations and finalizer the reconcilers own.

Every other resource is named in `climatik.kube.resources`; the config's own names come from the
API that generates its CRD, so the client and the CRD cannot disagree.
"""

from __future__ import annotations

from climatik.api.identity import GROUP, KIND, PLURAL, VERSION
from climatik.kube.resources import Resource

POWER_CAPPING_CONFIGS = Resource(GROUP, VERSION, PLURAL, kind=KIND)

USER_MAX_ANNOTATION = "climatik-project.ai/user-max-replicas"
"""The user's own ceiling, remembered while Climatik holds a lower one."""
APPLIED_MAX_ANNOTATION = "climatik-project.ai/applied-max-replicas"
"""The ceiling Climatik last wrote, in the same patch as the ceiling: a ceiling that differs from
it was changed by someone else (the user lowering their max during a cap), and that change is the
user's new max."""
CAPPED_BY_ANNOTATION = "climatik-project.ai/capped-by"
"""`namespace/name` of the PowerCappingConfig holding the ceiling: a hint for people and a check
at give-back, never authority on its own (the config's `status.heldTargets` is)."""
CEILING_ANNOTATIONS = (USER_MAX_ANNOTATION, APPLIED_MAX_ANNOTATION, CAPPED_BY_ANNOTATION)
"""What Climatik writes on a target beside its ceiling. KServe copies an InferenceService's
annotations into its predictor's pod template unless its `inferenceservice-config` lists them in
`serviceAnnotationDisallowedList`, so unlisted they restart every predictor pod at each write."""
VPA_USER_MODE_ANNOTATION = "climatik-project.ai/user-update-mode"
"""On a VerticalPodAutoscaler whose evictions Climatik holds: the user's `updateMode`, restored
when the racks cool."""
VPA_HELD_BY_ANNOTATION = "climatik-project.ai/vpa-held-by"
"""`namespace/name` of the PowerCappingConfig holding a VPA's evictions; only that config, and
only in its own namespace, gives the mode back."""
GIVE_BACK_FINALIZER = f"{GROUP}/give-back"
"""On a config that holds ceilings, so its deletion waits until they are given back."""
VPA_GIVE_BACK_FINALIZER = f"{GROUP}/vpa-give-back"
"""On a config that holds a VPA's evictions, so its deletion waits until the user's
`updateMode` is written back (the VPA-hold controller's own: the power-cap reconciler drops
its finalizer on its own schedule)."""
PRIORITY_ANNOTATION = "climatik-project.ai/priority"
"""Set by the user on a target (an integer, default 0): under a tight cap a higher priority
keeps its replicas first (interactive serving over batch work)."""
DEFERRABLE_ANNOTATION = "climatik-project.ai/deferrable"
"""Set by the user on a target (`"true"`/`"false"`, default false): its work may wait for a
cleaner grid, so a carbon cap holds back deferrable targets only."""
KSERVE_ISVC_LABEL = "serving.kserve.io/inferenceservice"
"""KServe labels predictor pods with their InferenceService's name."""
GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource of NVIDIA's device plugin: a pod that asks for it draws GPU power, which
the power measurement must see (`GpuPowerMeasured` condition)."""
