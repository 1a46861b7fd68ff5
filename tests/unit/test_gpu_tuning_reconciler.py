"""Pure parts of the GPU-tuning reconciler: the Job it builds, and where it may build one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from climatik.domain.config import GpuTuningConfig, GpuTuningMode, PowerCappingConfig, SloBounds
from climatik.domain.gpu import (
    TUNE_NODE_LABEL,
    lock_configmap_name,
    node_label_value,
    result_configmap_name,
)
from climatik.domain.gpu_tune_result import TuneMode
from climatik.reconcilers.gpu_tuning import (
    PURPOSE_LABEL,
    TuningNotAllowedError,
    build_job,
    build_lock_job,
)
from climatik.reconcilers.settings import GpuTuningSettings
from climatik.world.tuning import read_tune_job
from tests.json_paths import dig, list_at, obj_at


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
    pod = obj_at(job, "spec", "template", "spec")
    (container,) = list_at(pod, "containers")
    assert pod["nodeName"] == "gpu-node-1"
    assert pod["restartPolicy"] == "Never"
    assert dig(job, "spec", "backoffLimit") == 0
    assert dig(job, "metadata", "namespace") == "gpu-tuning"
    assert dig(job, "metadata", "labels", TUNE_NODE_LABEL) == "gpu-node-1"
    assert dig(container, "image") == "climatik:test"
    args = list_at(container, "args")
    assert args[:3] == ["gpu-tune", "--mode", "apply"]
    assert "--vllm-metrics" in args
    assert args[args.index("--max-p99-token-latency-s") + 1] == "0.05"
    target = args[args.index("--result-configmap") + 1]
    assert target == f"gpu-tuning/{result_configmap_name('gpu-node-1')}"
    security = obj_at(container, "securityContext")
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert "privileged" not in security
    assert security["readOnlyRootFilesystem"] is True
    recommend = build_job(config(GpuTuningMode.RECOMMEND), "n", [], settings, now)
    assert dig(recommend, "spec", "template", "spec", "containers", 0, "args", 2) == "recommend"


@pytest.mark.parametrize("mode", [GpuTuningMode.RECOMMEND, GpuTuningMode.APPLY])
@pytest.mark.parametrize("allowed", [["serving"], ["*"], ["other", "serving"]])
def test_the_job_runs_its_mode_in_a_namespace_the_settings_allow(
    allowed: list[str], mode: GpuTuningMode
) -> None:
    settings = GpuTuningSettings(allowed_namespaces=allowed)
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    job = build_job(config(mode), "n", [], settings, now)
    assert dig(job, "spec", "template", "spec", "containers", 0, "args", 2) == mode.lower()


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


def test_a_lock_job_locks_its_node_at_one_clock_and_the_world_plays_it() -> None:
    settings = GpuTuningSettings(
        job_namespace="gpu-tuning", image="climatik:test", allowed_namespaces=["serving"]
    )
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    job = build_lock_job(config(GpuTuningMode.APPLY), "gpu-node-1", 1410, settings, now)
    (container,) = list_at(obj_at(job, "spec", "template", "spec"), "containers")
    args = list_at(container, "args")
    assert args[:5] == ["gpu-tune", "--mode", "lock", "--clock-mhz", "1410"]
    target = args[args.index("--result-configmap") + 1]
    assert target == f"gpu-tuning/{lock_configmap_name('gpu-node-1')}"
    assert lock_configmap_name("gpu-node-1") != result_configmap_name("gpu-node-1")
    # Labelled apart from sweeps (which alone count against their interval); the same privileges
    # and node pin as a sweep.
    assert dig(job, "metadata", "labels", PURPOSE_LABEL) == "lock"
    assert dig(job, "metadata", "labels", TUNE_NODE_LABEL) == "gpu-node-1"
    assert dig(container, "securityContext", "capabilities", "add") == ["SYS_ADMIN"]
    order = read_tune_job({**job, "metadata": {**obj_at(job, "metadata"), "uid": "u"}})
    assert order is not None
    assert (order.mode, order.clock_mhz, order.node) == (TuneMode.LOCK, 1410, "gpu-node-1")
    with pytest.raises(TuningNotAllowedError):
        build_lock_job(
            config(GpuTuningMode.APPLY), "n", 1410, GpuTuningSettings(allowed_namespaces=[]), now
        )
