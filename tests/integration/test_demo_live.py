"""A shortened `climatik demo`: the whole loop comes up, acts, and goes away.

The dev cluster with KEDA, the world playing the default scenario at 10x from noon, a real
Prometheus, the demo's Deployments, ScaledObjects and PowerCappingConfig, and `climatik run`:
KEDA scales a service above its minimum on the world's vLLM series, the controller writes a
ceiling (remembering the user's in its annotation), the progress line reads the pods' power,
the world's own figures (tokens served, energy) reach Prometheus and make a live row beside the
twin's, and when the demo ends no process it started is left.

With `--gpu-tuning Apply`, near the cap the controller starts a tuning Job per node, the world
plays it (sweeps that node's clocks, writes the result ConfigMap, keeps the chosen clock), the
node's GPUs report the clock, and the controller rescales its watts per replica from the result.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from climatik.demo.compare import run_twin, with_live
from climatik.demo.progress import Snapshot, progress_line
from climatik.demo.stack import TUNING_NAMESPACE, DemoSettings, Stack, running_stack
from climatik.devcluster.binaries import (
    BinariesMissingError,
    locate_binaries,
    locate_keda,
    locate_kserve,
)
from climatik.domain.gpu import TUNE_RESULT_KEY
from climatik.kube.json import as_object, child, objects, strings, text
from climatik.sim.scenario import load_scenario
from tests.integration.helpers.host_processes import processes_mentioning
from tests.integration.helpers.polling import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.keda,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

USER_MAX_ANNOTATION = "climatik-project.ai/user-max-replicas"


def ceilings_written(stack: Stack) -> list[str]:
    """The ScaledObjects on which the controller remembered the user's ceiling."""
    response = stack.cluster.admin_client().get(
        f"/apis/keda.sh/v1alpha1/namespaces/{stack.settings.namespace}/scaledobjects"
    )
    if response.status != 200:
        return []
    return [
        text(child(obj, "metadata"), "name") or ""
        for obj in objects(as_object(response.body), "items")
        if USER_MAX_ANNOTATION in strings(child(obj, "metadata"), "annotations")
    ]


async def test_a_short_demo_scales_caps_and_leaves_nothing_behind(tmp_path: Path) -> None:
    try:
        locate_binaries()
        locate_keda()
    except BinariesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    settings = DemoSettings(
        scenario_name="default",
        scenario=load_scenario("default"),
        directory=tmp_path / "demo",
        speed=10.0,
        minutes=2.0,
        start_hour=12.0,
        gpu_tuning="Apply",
    )
    said: list[str] = []
    started = time.monotonic()
    with running_stack(settings, said.append) as stack:

        async def snapshot() -> Snapshot:
            return await asyncio.to_thread(stack.snapshot, time.monotonic() - started)

        # KEDA scales a service above its minimum on the world's series.
        scaled = await eventually(
            snapshot,
            lambda s: s.pods_w is not None and any(v.ready > 1 for v in s.services.values()),
            timeout_s=150,
            interval_s=2.0,
        )
        said.append(progress_line(scaled))
        assert scaled.pods_w is not None
        assert scaled.pods_w > 0
        # The controller acted on a ScaledObject: it remembers the user's ceiling.
        await eventually(
            lambda: asyncio.to_thread(ceilings_written, stack),
            bool,
            timeout_s=90,
            interval_s=2.0,
        )
        # The world's own figures reach Prometheus: tokens served, in simulated time. The
        # controller may write its first ceiling before chat's first replica has loaded its
        # model (6 wall seconds at 10x), so chat's tokens are waited for, not assumed.
        summary = await eventually(
            lambda: asyncio.to_thread(stack.summary),
            lambda lines: any(
                line.startswith("chat: ") and not line.startswith("chat: 0 ") for line in lines
            ),
            timeout_s=60,
            interval_s=2.0,
        )
        said.extend(summary)
        assert summary[0].startswith("simulated ")
        # The live row beside the twin's on the same window: the world's totals, read back.
        totals = await asyncio.to_thread(stack.totals)
        assert totals is not None
        assert totals.simulated_s > 0
        assert totals.energy_j > 0
        live = with_live(run_twin(settings.scenario, 12.0, totals.simulated_s), totals, [], {})
        assert live.policies["live"]["tokens"] == pytest.approx(sum(totals.tokens.values()))

        # Near the cap the controller tunes every node it serves on; the world plays each Job
        # (eight clocks of 50 simulated seconds: 40 s at 10x) and answers in its ConfigMap.
        # Both services' tokens per joule peak far below the top clock (chat's near 1,065 MHz,
        # the summariser's near 1,335), yet a summariser node's noisy sweep keeps the top in
        # about 6 % of draws: so the test waits for a node tuned below the top, not for the
        # first answer.
        top = settings.scenario.racks.gpu_curve.max_clock_mhz
        applied = await eventually(
            lambda: asyncio.to_thread(applied_clocks, stack),
            lambda clocks: any(clock < top for clock in clocks.values()),
            timeout_s=120,
            interval_s=2.0,
        )
        # That node's GPUs report the clock applied there, and the controller took the results.
        node, clock = min(applied.items(), key=lambda item: item[1])
        reported = await eventually(
            lambda: asyncio.to_thread(
                stack.query, f'max(DCGM_FI_DEV_SM_CLOCK{{Hostname="{node}"}})'
            ),
            lambda value: value == clock,
            timeout_s=30,
            interval_s=1.0,
        )
        assert reported == clock
        controller_log = settings.directory / "logs" / "controller.log"
        await eventually(
            lambda: asyncio.to_thread(controller_log.read_text),
            lambda text: "watts_per_replica_rescaled" in text,
            timeout_s=30,
            interval_s=1.0,
        )
    # Every process the demo started mentions its directory (kubeconfig, logs, data).
    assert not processes_mentioning(str(settings.directory.resolve()))
    assert said[0].startswith("starting the dev cluster")


def applied_clocks(stack: Stack) -> dict[str, float]:
    """Node -> the clock its tuning result applied, from the ConfigMaps the world wrote."""
    response = stack.cluster.admin_client().get(f"/api/v1/namespaces/{TUNING_NAMESPACE}/configmaps")
    if response.status != 200:
        return {}
    clocks: dict[str, float] = {}
    for item in objects(as_object(response.body), "items"):
        document = json.loads(strings(item, "data").get(TUNE_RESULT_KEY, "{}"))
        if document.get("appliedClockMHz") is not None:
            clocks[document["node"]] = float(document["appliedClockMHz"])
    return clocks


def spec_writers(stack: Stack, resource: str, name: str) -> set[str]:
    """Who wrote an object's spec, from its managedFields."""
    ns = stack.settings.namespace
    response = stack.cluster.admin_client().get(f"{resource}/namespaces/{ns}/{name}")
    if response.status != 200:
        return set()
    return {
        text(entry, "manager") or ""
        for entry in objects(child(as_object(response.body), "metadata"), "managedFields")
        if "f:spec" in child(entry, "fieldsV1")
    }


def isvc_ceilings_written(stack: Stack) -> list[str]:
    """The InferenceServices on which the controller remembered the user's ceiling."""
    ns = stack.settings.namespace
    response = stack.cluster.admin_client().get(
        f"/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
    )
    if response.status != 200:
        return []
    return [
        text(child(obj, "metadata"), "name") or ""
        for obj in objects(as_object(response.body), "items")
        if USER_MAX_ANNOTATION in strings(child(obj, "metadata"), "annotations")
    ]


@pytest.mark.kserve
async def test_the_kserve_demo_lowers_inference_services_never_their_scaled_objects(
    tmp_path: Path,
) -> None:
    try:
        locate_binaries()
        locate_keda()
        locate_kserve()
    except BinariesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    settings = DemoSettings(
        scenario_name="default",
        scenario=load_scenario("default"),
        directory=tmp_path / "demo",
        minutes=2.0,
        start_hour=12.0,
        kserve=True,
    )
    keda = "/apis/keda.sh/v1alpha1"
    with running_stack(settings, lambda _: None) as stack:
        # KServe made each predictor's ScaledObject; who wrote its spec is on record.
        kserve_writers = await eventually(
            lambda: asyncio.to_thread(spec_writers, stack, keda, "scaledobjects/chat-predictor"),
            bool,
            timeout_s=90,
        )
        # The controller lowered an InferenceService (remembering the user's maxReplicas) ...
        lowered = await eventually(
            lambda: asyncio.to_thread(isvc_ceilings_written, stack), bool, timeout_s=120
        )
        # ... and KServe, not Climatik, carried it to the ScaledObjects.
        for name in lowered:
            writers = await asyncio.to_thread(
                spec_writers, stack, keda, f"scaledobjects/{name}-predictor"
            )
            assert writers <= kserve_writers, f"someone besides KServe wrote {name}'s spec"
    assert not processes_mentioning(str(settings.directory.resolve()))
