"""Pure parts of the GPU-tuning reconciler: when to tune, the Job it builds, reading results."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from climatik.domain.capping import CappingState, TargetLearnerState
from climatik.domain.config import GpuTuningConfig, GpuTuningMode, PowerCappingConfig, SloBounds
from climatik.domain.gpu import TUNE_NODE_LABEL, node_label_value, result_configmap_name
from climatik.reconcilers.gpu_tuning import (
    TriggerInputs,
    TuningHints,
    TuningNotAllowedError,
    build_job,
    tuning_reason,
    watts_scale,
)
from climatik.reconcilers.powercap import rescale_watts_per_replica
from climatik.reconcilers.settings import GpuTuningSettings


def inputs(**overrides: object) -> TriggerInputs:
    values: dict[str, object] = {
        "measured_w": 500.0,
        "cap_w": 1000.0,
        "rack_near_limit": False,
        "tokens_per_watt": 1.0,
        "tokens_per_watt_at_last_tuning": 1.0,
    }
    values.update(overrides)
    return TriggerInputs(**values)  # type: ignore[arg-type]


def test_tuning_triggers_of_the_design_document() -> None:
    assert tuning_reason(inputs()) is None
    assert tuning_reason(inputs(measured_w=800.0)) == "power at 80% of the cap"
    assert tuning_reason(inputs(rack_near_limit=True)) is not None
    assert "tokens per watt moved -20%" in (tuning_reason(inputs(tokens_per_watt=0.8)) or "")
    assert tuning_reason(inputs(measured_w=None, tokens_per_watt=None)) is None


def config(mode: GpuTuningMode) -> PowerCappingConfig:
    return PowerCappingConfig(
        namespace="serving",
        name="cap",
        generation=1,
        power_cap_w=1000,
        gpu_tuning=GpuTuningConfig(mode=mode, slo=SloBounds(max_inter_token_latency_s=0.05)),
    )


def test_job_is_pinned_to_its_node_and_holds_only_the_privilege_nvml_needs() -> None:
    settings = GpuTuningSettings(
        job_namespace="gpu-tuning", image="climatik:test", allowed_namespaces=["serving"]
    )
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    job = build_job(
        config(GpuTuningMode.APPLY), "gpu-node-1", ["http://10.0.0.5:8000/metrics"], settings, now
    )
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["nodeName"] == "gpu-node-1"
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["namespace"] == "gpu-tuning"
    assert job["metadata"]["labels"][TUNE_NODE_LABEL] == "gpu-node-1"
    assert container["image"] == "climatik:test"
    assert container["args"][:3] == ["gpu-tune", "--mode", "apply"]
    assert "--vllm-metrics" in container["args"]
    assert container["args"][container["args"].index("--max-p99-token-latency-s") + 1] == "0.05"
    target = container["args"][container["args"].index("--result-configmap") + 1]
    assert target == f"gpu-tuning/{result_configmap_name('gpu-node-1')}"
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert "privileged" not in security
    assert security["readOnlyRootFilesystem"] is True
    recommend = build_job(config(GpuTuningMode.RECOMMEND), "n", [], settings, now)
    assert recommend["spec"]["template"]["spec"]["containers"][0]["args"][2] == "recommend"


@pytest.mark.parametrize("mode", [GpuTuningMode.RECOMMEND, GpuTuningMode.APPLY])
@pytest.mark.parametrize("allowed", [["serving"], ["*"], ["other", "serving"]])
def test_the_job_runs_its_mode_in_a_namespace_the_settings_allow(
    allowed: list[str], mode: GpuTuningMode
) -> None:
    settings = GpuTuningSettings(allowed_namespaces=allowed)
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    job = build_job(config(mode), "n", [], settings, now)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][2] == mode.lower()


@pytest.mark.parametrize("mode", [GpuTuningMode.RECOMMEND, GpuTuningMode.APPLY])
@pytest.mark.parametrize("allowed", [[], ["other"], ["serving-2"]])
def test_no_job_is_built_for_a_namespace_the_settings_do_not_allow(
    allowed: list[str], mode: GpuTuningMode
) -> None:
    # build_job refuses itself, whatever the caller checked: even a recommending sweep locks
    # every GPU clock of the node while it runs.
    settings = GpuTuningSettings(allowed_namespaces=allowed)
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    with pytest.raises(TuningNotAllowedError, match="namespace serving"):
        build_job(config(mode), "n", [], settings, now)


def test_long_node_names_become_valid_label_values() -> None:
    name = "node-" + "x" * 80
    value = node_label_value(name)
    assert len(value) <= 63
    assert value != node_label_value(name + "y")


def result(mode: str, before_w: float, after_w: float, applied: int | None) -> dict[str, object]:
    return {
        "mode": mode,
        "appliedClockMHz": applied,
        "choice": {"before": {"watts": before_w}, "after": {"watts": after_w}},
    }


def test_only_applied_results_rescale_power() -> None:
    assert watts_scale(result("apply", 800, 600, 1400)) == pytest.approx(0.75)
    assert watts_scale(result("recommend", 800, 600, None)) is None
    assert watts_scale({"mode": "apply", "error": {"reason": "NoPermission"}}) is None


def test_hints_are_taken_once_and_rescale_the_learner() -> None:
    hints = TuningHints()
    hints.record("ns/cap", 0.7)
    hints.record("ns/cap", 0.8)
    scale = hints.take("ns/cap")
    assert scale == pytest.approx(0.75)
    assert hints.take("ns/cap") is None
    state = CappingState(targets={"llm": TargetLearnerState(watts_per_replica=400.0, samples=5)})
    rescaled = rescale_watts_per_replica(state, 0.75)
    assert rescaled.targets["llm"].watts_per_replica == pytest.approx(300.0)
    assert rescaled.targets["llm"].samples == 5
