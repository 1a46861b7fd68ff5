"""The custom resources the reconcilers watch and patch, and the annotations they own."""

from __future__ import annotations

from climatik.kube.client import custom

POWER_CAPPING_CONFIGS = custom("powercapping.climatik-project.ai", "v1", "powercappingconfigs")
SCALED_OBJECTS = custom("keda.sh", "v1alpha1", "scaledobjects")
INFERENCE_SERVICES = custom("serving.kserve.io", "v1beta1", "inferenceservices")
HORIZONTAL_POD_AUTOSCALERS = custom("autoscaling", "v2", "horizontalpodautoscalers")

USER_MAX_ANNOTATION = "climatik-project.ai/user-max-replicas"
"""The user's own ceiling, remembered while Climatik holds a lower one."""
APPLIED_MAX_ANNOTATION = "climatik-project.ai/applied-max-replicas"
"""The ceiling Climatik last wrote, in the same patch as the ceiling: a ceiling that differs from
it was changed by someone else (the user lowering their max during a cap), and that change is the
user's new max."""
CAPPED_BY_ANNOTATION = "climatik-project.ai/capped-by"
"""`namespace/name` of the PowerCappingConfig holding the ceiling: a hint for people and a check
at give-back, never authority on its own (the config's `status.heldTargets` is)."""
GIVE_BACK_FINALIZER = "powercapping.climatik-project.ai/give-back"
"""On a config that holds ceilings, so its deletion waits until they are given back."""
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
