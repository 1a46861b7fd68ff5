"""PowerCappingConfig objects shared by the API's unit and integration tests.

The design document's examples are kept verbatim, so "they apply unchanged" is tested against
the text a user would copy. The invalid objects are each one mutation of a valid object with the
field path the refusal must name; the unit tests run them through the pydantic models and the
integration tests through the real API server, so the two validators are held to one list.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Section 8.1.3 (KServe integration, step 4), verbatim.
DESIGN_EXAMPLE_KSERVE = """\
apiVersion: powercapping.climatik-project.ai/v1
kind: PowerCappingConfig
metadata:
  name: llm-inference-power-cap
spec:
  powerCapLimit: 1000
  scaleObjectRef:
    - apiVersion: keda.sh/v1alpha1
      kind: ScaledObject
      metadata:
        name: llm-inference-scaledobject
  rackConstraints:
    - rackId: rack-1
      maxPower: 2000
      maxTemperature: 30
    - rackId: rack-2
      maxPower: 1500
      maxTemperature: 28
"""

# Section 3.2 (the API spec), verbatim except that each `<placeholder>` holds a value of its
# kind; the vLLM names come from section 8.2 (the ScaledObject of 8.2.2, its Prometheus).
DESIGN_EXAMPLE_API_SPEC = """\
apiVersion: powercapping.climatik-project.ai/v1
kind: PowerCappingConfig
metadata:
  name: llm-inference-power-cap
spec:
  powerCapLimit: 3000
  deploymentName: vllm-deployment
  scaleObjectRef:
    - apiVersion: keda.sh/v1alpha1
      kind: ScaledObject
      metadata:
        name: vllm-scaledobject
    - apiVersion: keda.sh/v1alpha1
      kind: ScaledObject
      metadata:
        name: llm-inference-scaledobject
  metrics:
    - type: Prometheus
      prometheusAddress: http://prometheus-server
      query: sum(kepler_pod_cpu_watts{pod_name=~"vllm-deployment-.*"})
      threshold: 2500
  rackConstraints:
    - rackId: rack-1
      maxPower: 2000
      maxTemperature: 30
    - rackId: rack-2
      maxPower: 1500
      maxTemperature: 28
"""

DESIGN_EXAMPLES = {
    "section-8.1.3-kserve": DESIGN_EXAMPLE_KSERVE,
    "section-3.2-api-spec": DESIGN_EXAMPLE_API_SPEC,
}

# Every extension set, with values other than the defaults.
FULL_EXAMPLE = """\
apiVersion: powercapping.climatik-project.ai/v1
kind: PowerCappingConfig
metadata:
  name: full
spec:
  powerCapLimit: 12000
  deploymentName: vllm-deployment
  scaleObjectRef:
    - metadata:
        name: vllm-scaledobject
  targetSelector:
    matchLabels:
      climatik-project.ai/capped: "true"
    matchExpressions:
      - key: serving.kserve.io/inferenceservice
        operator: Exists
      - key: tier
        operator: In
        values: [gold, silver]
  metrics:
    - type: Prometheus
      prometheusAddress: https://prometheus.monitoring.svc:9090
      query: sum(DCGM_FI_DEV_POWER_USAGE{exported_namespace="llm"})
  rackConstraints:
    - rackId: rack-a
      maxPower: 40000
      maxTemperature: 32
    - rackId: rack-b
      maxTemperature: 30
  policy:
    type: Threshold
    cappingThresholdPercent: 75
    holdingThresholdPercent: 90
    safetyMarginPercent: 10
    hysteresisPercent: 3
    stepDownReplicas: 2
    stepDownIntervalSeconds: 60
  powerMeasurement:
    preset: Custom
    prometheusAddress: http://prometheus.monitoring.svc:9090
    powerQuery: sum by (pod) (DCGM_FI_DEV_POWER_USAGE)
    rackPowerQuery: sum by (rack) (pdu_output_watts)
    rackTemperatureQuery: max by (rack) (rack_inlet_celsius)
  carbon:
    provider: ElectricityMaps
    zone: DE
    apiKeySecretRef:
      name: electricitymaps
      key: token
    target:
      type: IntensityBand
      cleanIntensityGramsPerKWh: 100
      dirtyIntensityGramsPerKWh: 400
    floorWatts: 4000
    pue: 1.3
    maxAgeSeconds: 1800
    fallback: FloorCap
  placement:
    mode: Template
    rackLabelKey: topology.example.com/rack
    excludeOverLimitRacks: false
    migration:
      enabled: true
      minGainCelsius: 0.2
      minIntervalSeconds: 600
      minReadyReplicas: 3
  cooling:
    mode: Webhook
    webhookURL: https://cooling.example.com/api/v1/recommendations
    redlineCelsius: 35
  gpuTuning:
    mode: Recommend
    minIntervalSeconds: 7200
    sloBounds:
      maxTimeToFirstTokenMilliseconds: 500
      maxInterTokenLatencyMilliseconds: 50
      minTokensPerSecond: 1000
  replicaSizing:
    maxTimeToFirstTokenMilliseconds: 1000
    maxInterTokenLatencyMilliseconds: 80
    sloAttainmentPercent: 99.9
    applyWindow:
      start: "22:30"
      end: "05:00"
      timeZone: Europe/Berlin
  failSafe:
    maxMetricAgeSeconds: 60
    holdSeconds: 600
    safeMaxReplicas: 2
"""

BASE = """\
apiVersion: powercapping.climatik-project.ai/v1
kind: PowerCappingConfig
metadata:
  name: invalid
spec:
  powerCapLimit: 1000
  scaleObjectRef:
    - apiVersion: keda.sh/v1alpha1
      kind: ScaledObject
      metadata:
        name: llm-inference-scaledobject
  metrics:
    - type: Prometheus
      prometheusAddress: http://prometheus-server:9090
      query: sum(kepler_pod_cpu_watts)
      threshold: 900
  rackConstraints:
    - rackId: rack-1
      maxPower: 2000
      maxTemperature: 30
"""


DOCS_API = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def docs_examples() -> list[dict[str, Any]]:
    """Every PowerCappingConfig YAML block in docs/api.md, in order."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS_API.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [load(block) for block in blocks if "kind: PowerCappingConfig" in block]


def load(text: str) -> dict[str, Any]:
    """One YAML document as a dict."""
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


@dataclass(frozen=True)
class InvalidCase:
    """A valid object with one thing wrong, and the field path the refusal must name."""

    id: str
    mutate: Callable[[dict[str, Any]], None]
    field: str

    def build(self) -> dict[str, Any]:
        """The invalid object (a fresh copy each time)."""
        obj = copy.deepcopy(load(BASE))
        obj["metadata"]["name"] = self.id
        self.mutate(obj["spec"])
        return obj


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting `path` (dots, `[i]` list indexes) under spec to `value`."""

    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        parts = path.replace("[", ".[").split(".")
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        parts = path.replace("[", ".[").split(".")
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        del node[parts[-1]]

    return mutate


def _all(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(spec)

    return mutate


def _ref(name: str) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name}}


_METRIC = {"type": "Prometheus", "prometheusAddress": "http://p:9090", "query": "up"}
_EMAPS = {
    "provider": "ElectricityMaps",
    "zone": "DE",
    "apiKeySecretRef": {"name": "emaps", "key": "token"},
    "target": {"type": "EmissionRate", "emissionRateGramsPerHour": 100_000},
}
_UK = {
    "provider": "UKNationalGrid",
    "target": {"type": "EmissionRate", "emissionRateGramsPerHour": 1},
}

INVALID_CASES: tuple[InvalidCase, ...] = (
    # The design document's fields.
    InvalidCase("cap-missing", _delete("powerCapLimit"), "spec.powerCapLimit"),
    InvalidCase("cap-zero", _set("powerCapLimit", 0), "spec.powerCapLimit"),
    InvalidCase("cap-negative", _set("powerCapLimit", -500), "spec.powerCapLimit"),
    InvalidCase("cap-implausible", _set("powerCapLimit", 10**9), "spec.powerCapLimit"),
    InvalidCase("cap-not-a-number", _set("powerCapLimit", "1kW"), "spec.powerCapLimit"),
    InvalidCase("no-target", _delete("scaleObjectRef"), "spec.scaleObjectRef"),
    InvalidCase(
        "duplicate-scaledobject",
        _set("scaleObjectRef", [_ref("a"), _ref("a")]),
        "spec.scaleObjectRef",
    ),
    InvalidCase(
        "too-many-scaledobjects",
        _set("scaleObjectRef", [_ref(f"so-{i}") for i in range(65)]),
        "spec.scaleObjectRef",
    ),
    InvalidCase(
        "ref-wrong-kind",
        _set("scaleObjectRef[0].kind", "Deployment"),
        "spec.scaleObjectRef[0].kind",
    ),
    InvalidCase(
        "ref-wrong-api",
        _set("scaleObjectRef[0].apiVersion", "keda.sh/v2"),
        "spec.scaleObjectRef[0].apiVersion",
    ),
    InvalidCase(
        "ref-no-name",
        _set("scaleObjectRef[0].metadata", {}),
        "spec.scaleObjectRef[0].metadata.name",
    ),
    InvalidCase(
        "ref-bad-name",
        _set("scaleObjectRef[0].metadata.name", "LLM_Scaled"),
        "spec.scaleObjectRef[0].metadata.name",
    ),
    InvalidCase(
        "deployment-bad-name", _set("deploymentName", "my deployment"), "spec.deploymentName"
    ),
    InvalidCase("metric-type", _set("metrics[0].type", "Datadog"), "spec.metrics[0].type"),
    InvalidCase(
        "metric-ftp-url",
        _set("metrics[0].prometheusAddress", "ftp://prometheus:21"),
        "spec.metrics[0].prometheusAddress",
    ),
    InvalidCase(
        "metric-url-no-scheme",
        _set("metrics[0].prometheusAddress", "prometheus-server:9090"),
        "spec.metrics[0].prometheusAddress",
    ),
    InvalidCase("metric-no-query", _delete("metrics[0].query"), "spec.metrics[0].query"),
    InvalidCase("metric-huge-query", _set("metrics[0].query", "x" * 5000), "spec.metrics[0].query"),
    InvalidCase(
        "metric-negative-threshold", _set("metrics[0].threshold", -1), "spec.metrics[0].threshold"
    ),
    InvalidCase("too-many-metrics", _set("metrics", [_METRIC] * 9), "spec.metrics"),
    InvalidCase(
        "duplicate-rack",
        _set("rackConstraints", [{"rackId": "r1", "maxPower": 1}, {"rackId": "r1", "maxPower": 2}]),
        "spec.rackConstraints",
    ),
    InvalidCase(
        "rack-zero-power",
        _set("rackConstraints[0].maxPower", 0),
        "spec.rackConstraints[0].maxPower",
    ),
    InvalidCase(
        "rack-too-hot",
        _set("rackConstraints[0].maxTemperature", 250),
        "spec.rackConstraints[0].maxTemperature",
    ),
    InvalidCase(
        "rack-below-freezing",
        _set("rackConstraints[0].maxTemperature", -10),
        "spec.rackConstraints[0].maxTemperature",
    ),
    InvalidCase(
        "rack-no-limits",
        _set("rackConstraints", [{"rackId": "r1"}]),
        "spec.rackConstraints[0].maxPower",
    ),
    InvalidCase(
        "rack-no-id", _set("rackConstraints", [{"maxPower": 100}]), "spec.rackConstraints[0].rackId"
    ),
    InvalidCase(
        "rack-bad-id",
        _set("rackConstraints[0].rackId", "rack 1!"),
        "spec.rackConstraints[0].rackId",
    ),
    InvalidCase("unknown-field", _set("powerCapWatts", 1000), "spec.powerCapWatts"),
    # Extensions.
    InvalidCase("policy-type", _set("policy", {"type": "Aggressive"}), "spec.policy.type"),
    InvalidCase(
        "policy-thresholds-reversed",
        _set("policy", {"cappingThresholdPercent": 95, "holdingThresholdPercent": 80}),
        "spec.policy.holdingThresholdPercent",
    ),
    InvalidCase(
        "policy-threshold-over-100",
        _set("policy", {"cappingThresholdPercent": 150}),
        "spec.policy.cappingThresholdPercent",
    ),
    InvalidCase(
        "policy-hysteresis-too-big",
        _set("policy", {"cappingThresholdPercent": 40, "hysteresisPercent": 45}),
        "spec.policy.hysteresisPercent",
    ),
    InvalidCase("selector-empty", _set("targetSelector", {}), "spec.targetSelector.matchLabels"),
    InvalidCase(
        "selector-in-without-values",
        _set("targetSelector", {"matchExpressions": [{"key": "app", "operator": "In"}]}),
        "spec.targetSelector.matchExpressions[0].values",
    ),
    InvalidCase(
        "selector-bad-operator",
        _set(
            "targetSelector",
            {"matchExpressions": [{"key": "app", "operator": "Like", "values": ["a"]}]},
        ),
        "spec.targetSelector.matchExpressions[0].operator",
    ),
    InvalidCase(
        "measurement-custom-without-query",
        _set("powerMeasurement", {"preset": "Custom"}),
        "spec.powerMeasurement.powerQuery",
    ),
    InvalidCase(
        "measurement-file-url",
        _set("powerMeasurement", {"prometheusAddress": "file:///etc/passwd"}),
        "spec.powerMeasurement.prometheusAddress",
    ),
    InvalidCase(
        "carbon-provider", _set("carbon", {**_EMAPS, "provider": "Guess"}), "spec.carbon.provider"
    ),
    InvalidCase(
        "carbon-emaps-without-zone",
        _set("carbon", {k: v for k, v in _EMAPS.items() if k != "zone"}),
        "spec.carbon.zone",
    ),
    InvalidCase(
        "carbon-emaps-without-secret",
        _set("carbon", {k: v for k, v in _EMAPS.items() if k != "apiKeySecretRef"}),
        "spec.carbon.apiKeySecretRef",
    ),
    InvalidCase(
        "carbon-secret-other-namespace",
        _set(
            "carbon",
            {**_EMAPS, "apiKeySecretRef": {"name": "emaps", "key": "token", "namespace": "kube"}},
        ),
        "spec.carbon.apiKeySecretRef.namespace",
    ),
    InvalidCase(
        "carbon-band-reversed",
        _set(
            "carbon",
            {
                **_UK,
                "target": {
                    "type": "IntensityBand",
                    "cleanIntensityGramsPerKWh": 300,
                    "dirtyIntensityGramsPerKWh": 100,
                },
            },
        ),
        "spec.carbon.target.cleanIntensityGramsPerKWh",
    ),
    InvalidCase(
        "carbon-rate-missing",
        _set("carbon", {**_UK, "target": {"type": "EmissionRate"}}),
        "spec.carbon.target.emissionRateGramsPerHour",
    ),
    InvalidCase(
        "carbon-band-incomplete",
        _set(
            "carbon",
            {**_UK, "target": {"type": "IntensityBand", "cleanIntensityGramsPerKWh": 100}},
        ),
        "spec.carbon.target.dirtyIntensityGramsPerKWh",
    ),
    InvalidCase(
        "carbon-watttime-without-region",
        _set(
            "carbon", {**{k: v for k, v in _EMAPS.items() if k != "zone"}, "provider": "WattTime"}
        ),
        "spec.carbon.region",
    ),
    InvalidCase(
        "carbon-static-without-intensity",
        _set("carbon", {**_UK, "provider": "Static"}),
        "spec.carbon.staticIntensityGramsPerKWh",
    ),
    InvalidCase(
        "carbon-floor-above-cap",
        _set("carbon", {**_UK, "floorWatts": 5000}),
        "spec.carbon.floorWatts",
    ),
    InvalidCase("carbon-pue-below-one", _set("carbon", {**_UK, "pue": 0.5}), "spec.carbon.pue"),
    InvalidCase(
        "carbon-region-id", _set("carbon", {**_UK, "regionId": 42}), "spec.carbon.regionId"
    ),
    InvalidCase(
        "carbon-region-id-and-postcode",
        _set("carbon", {**_UK, "regionId": 3, "postcode": "RG10"}),
        "spec.carbon.postcode",
    ),
    InvalidCase(
        "carbon-region-id-not-uk",
        _set("carbon", {**_EMAPS, "regionId": 3}),
        "spec.carbon.regionId",
    ),
    InvalidCase("placement-mode", _set("placement", {"mode": "Sometimes"}), "spec.placement.mode"),
    InvalidCase(
        "placement-label-key",
        _set("placement", {"rackLabelKey": "rack label!"}),
        "spec.placement.rackLabelKey",
    ),
    InvalidCase(
        "migration-no-gain",
        _set("placement", {"migration": {"enabled": True, "minGainCelsius": 0}}),
        "spec.placement.migration.minGainCelsius",
    ),
    InvalidCase(
        "migration-too-often",
        _set("placement", {"migration": {"enabled": True, "minIntervalSeconds": 5}}),
        "spec.placement.migration.minIntervalSeconds",
    ),
    InvalidCase(
        "cooling-webhook-without-url",
        _set("cooling", {"mode": "Webhook"}),
        "spec.cooling.webhookURL",
    ),
    InvalidCase(
        "cooling-javascript-url",
        _set("cooling", {"mode": "Webhook", "webhookURL": "javascript:alert(1)"}),
        "spec.cooling.webhookURL",
    ),
    InvalidCase(
        "cooling-redline", _set("cooling", {"redlineCelsius": 500}), "spec.cooling.redlineCelsius"
    ),
    InvalidCase("gpu-mode", _set("gpuTuning", {"mode": "Overclock"}), "spec.gpuTuning.mode"),
    InvalidCase(
        "replica-sizing-window-start",
        _set("replicaSizing", {"applyWindow": {"start": "25:00", "end": "05:00"}}),
        "spec.replicaSizing.applyWindow.start",
    ),
    InvalidCase(
        "replica-sizing-window-empty",
        _set("replicaSizing", {"applyWindow": {"start": "02:00", "end": "02:00"}}),
        "spec.replicaSizing.applyWindow.end",
    ),
    InvalidCase(
        "replica-sizing-window-zone",
        _set(
            "replicaSizing",
            {"applyWindow": {"start": "02:00", "end": "05:00", "timeZone": "Mars/Olympus_Mons"}},
        ),
        "spec.replicaSizing.applyWindow.timeZone",
    ),
    InvalidCase(
        "replica-sizing-window-local",
        _set(
            "replicaSizing",
            {"applyWindow": {"start": "02:00", "end": "05:00", "timeZone": "Local"}},
        ),
        "spec.replicaSizing.applyWindow.timeZone",
    ),
    InvalidCase(
        "replica-sizing-attainment-of-everyone",
        _set("replicaSizing", {"sloAttainmentPercent": 100}),
        "spec.replicaSizing.sloAttainmentPercent",
    ),
    InvalidCase(
        "gpu-interval",
        _set("gpuTuning", {"minIntervalSeconds": 1}),
        "spec.gpuTuning.minIntervalSeconds",
    ),
    InvalidCase(
        "gpu-clocks-under-cap-without-apply",
        _set("gpuTuning", {"mode": "Recommend", "clocksUnderCap": True}),
        "spec.gpuTuning.clocksUnderCap",
    ),
    InvalidCase(
        "gpu-clock-change-interval-too-short",
        _set(
            "gpuTuning", {"mode": "Apply", "clocksUnderCap": True, "clockChangeIntervalSeconds": 5}
        ),
        "spec.gpuTuning.clockChangeIntervalSeconds",
    ),
    InvalidCase(
        "failsafe-age-zero",
        _set("failSafe", {"maxMetricAgeSeconds": 0}),
        "spec.failSafe.maxMetricAgeSeconds",
    ),
    InvalidCase(
        "failsafe-zero-replicas",
        _set("failSafe", {"safeMaxReplicas": 0}),
        "spec.failSafe.safeMaxReplicas",
    ),
)

INVALID_CASE_IDS = [case.id for case in INVALID_CASES]
assert len(set(INVALID_CASE_IDS)) == len(INVALID_CASE_IDS), "case ids must be unique"
