"""Clocks decided with the replicas, live (`spec.gpuTuning.clocksUnderCap`).

A shortened `climatik demo --gpu-tuning Apply --clocks-under-cap` on the default scenario with
its cap lowered to 40 kW, so the cap binds at noon: the controller sweeps every node it serves
on (the world plays the sweeps), then decides each service's clock with its replicas and,
where the watts bind, asks for a slower clock than the sweep chose. A lock Job per node
carries it out (the world plays it: the node's GPUs report the clock), and the controller folds
the change into its power model once the node's result says the clock is there. Switched off,
no node is raised without the ceilings' checks.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import climatik.sim
from climatik.demo.manifests import CONFIG_NAME
from climatik.demo.stack import TUNING_NAMESPACE, DemoSettings, Stack, running_stack
from climatik.devcluster.binaries import BinariesMissingError, locate_binaries, locate_keda
from climatik.domain.gpu import TUNE_RESULT_KEY
from climatik.kube.json import as_object, child, items, objects, strings, text
from climatik.reconcilers.gpu_tuning import PURPOSE_LABEL
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.sim.scenario import load_scenario
from tests.integration.helpers.host_processes import processes_mentioning
from tests.integration.helpers.polling import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.keda,
    pytest.mark.slow,
    pytest.mark.timeout(600),
]

CAP_W = 40_000


def lock_jobs(stack: Stack) -> list[dict[str, Any]]:
    """The controller's lock Jobs: name, node, clock asked for."""
    response = stack.cluster.admin_client().get(
        f"/apis/batch/v1/namespaces/{TUNING_NAMESPACE}/jobs"
    )
    if response.status != 200:
        return []
    found = []
    for job in objects(as_object(response.body), "items"):
        if strings(child(job, "metadata"), "labels").get(PURPOSE_LABEL) != "lock":
            continue
        pod = child(child(child(job, "spec"), "template"), "spec")
        (container,) = objects(pod, "containers")
        args = [str(a) for a in items(container, "args")]
        found.append(
            {
                "name": text(child(job, "metadata"), "name"),
                "node": text(pod, "nodeName"),
                "mhz": int(args[args.index("--clock-mhz") + 1]),
            }
        )
    return found


def rescaled_change(line: str) -> bool:
    """A controller log line saying it rescaled its model for a clock change."""
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return bool(entry.get("event") == "gpu_clock_changed" and entry.get("rescaled"))


def results(stack: Stack) -> list[dict[str, Any]]:
    """Every result document the world wrote (sweeps and locks)."""
    response = stack.cluster.admin_client().get(f"/api/v1/namespaces/{TUNING_NAMESPACE}/configmaps")
    if response.status != 200:
        return []
    return [
        json.loads(strings(item, "data").get(TUNE_RESULT_KEY, "{}"))
        for item in objects(as_object(response.body), "items")
    ]


def tuned_clocks(stack: Stack) -> dict[str, int]:
    """Node -> the clock its sweep chose."""
    return {
        str(doc["node"]): int(doc["choice"]["clockMHz"])
        for doc in results(stack)
        if doc.get("mode") == "apply" and doc.get("choice")
    }


async def test_a_binding_cap_slows_a_services_clock_through_a_lock_job(tmp_path: Path) -> None:
    try:
        locate_binaries()
        locate_keda()
    except BinariesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    # The world loads the scenario by name or path: the default one, its cap lowered.
    builtin = Path(climatik.sim.__file__).parent / "scenarios" / "default.yaml"
    document = yaml.safe_load(builtin.read_text(encoding="utf-8"))
    document["caps"]["site_cap_w"] = CAP_W
    scenario_file = tmp_path / "default-40kw.yaml"
    scenario_file.write_text(yaml.safe_dump(document), encoding="utf-8")
    settings = DemoSettings(
        scenario_name=str(scenario_file),
        scenario=load_scenario(str(scenario_file)),
        directory=tmp_path / "demo",
        speed=10.0,
        minutes=8.0,
        start_hour=12.0,
        gpu_tuning="Apply",
        clocks_under_cap=True,
    )
    said: list[str] = []
    started = time.monotonic()
    with running_stack(settings, said.append) as stack:
        # A lock Job asks a node for a slower clock than its sweep chose: the watts bind.
        async def slowed() -> list[dict[str, Any]]:
            tuned = await asyncio.to_thread(tuned_clocks, stack)
            jobs = await asyncio.to_thread(lock_jobs, stack)
            return [j for j in jobs if j["node"] in tuned and j["mhz"] < tuned[j["node"]]]

        (job, *_) = await eventually(slowed, bool, timeout_s=420, interval_s=3.0)
        node = job["node"]
        # The world played it: the node's GPUs report the clock locked (the highest supported
        # one not above the request, in 15 MHz steps) ...
        reported = await eventually(
            lambda: asyncio.to_thread(
                stack.query, f'max(DCGM_FI_DEV_SM_CLOCK{{Hostname="{node}"}})'
            ),
            lambda value: value is not None and job["mhz"] - 15 < value <= job["mhz"],
            timeout_s=60,
            interval_s=1.0,
        )
        assert reported is not None
        # ... and the controller rescaled its power model for the change.
        controller_log = settings.directory / "logs" / "controller.log"
        await eventually(
            lambda: asyncio.to_thread(controller_log.read_text),
            lambda log: any(rescaled_change(line) for line in log.splitlines()),
            timeout_s=60,
            interval_s=1.0,
        )
        said.append(f"slowed {node} to {job['mhz']} MHz after {time.monotonic() - started:.0f} s")

        # Switched off, no node is raised behind the ceilings' back: the slowed one keeps its
        # clock (a put-back only lowers; its next sweep brings back the tuned one).
        api = stack.cluster.admin_client()
        path = (
            f"/apis/{POWER_CAPPING_CONFIGS.group}/{POWER_CAPPING_CONFIGS.version}/namespaces/"
            f"{settings.namespace}/{POWER_CAPPING_CONFIGS.plural}/{CONFIG_NAME}"
        )
        at_switch = await asyncio.to_thread(
            stack.query, f'max(DCGM_FI_DEV_SM_CLOCK{{Hostname="{node}"}})'
        )
        assert at_switch is not None
        config = as_object(api.get(path).body)
        spec = dict(child(config, "spec"))
        spec["gpuTuning"] = {**child(spec, "gpuTuning"), "clocksUnderCap": False}
        assert api.request("PUT", path, {**config, "spec": spec}).status == 200
        locks_before = {j["name"] for j in await asyncio.to_thread(lock_jobs, stack)}
        await asyncio.sleep(20)  # several of the GPU-tuning reconciler's 6 s rounds
        clock = await asyncio.to_thread(
            stack.query, f'max(DCGM_FI_DEV_SM_CLOCK{{Hostname="{node}"}})'
        )
        assert clock is not None
        assert clock <= at_switch
        raised = [
            j
            for j in await asyncio.to_thread(lock_jobs, stack)
            if j["name"] not in locks_before and j["mhz"] > at_switch and j["node"] == node
        ]
        assert not raised
    assert not processes_mentioning(str(settings.directory.resolve()))
