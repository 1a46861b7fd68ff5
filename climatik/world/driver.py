"""The world's loop: watch the cluster's inference pods and rack nodes, step the site at the
scenario's pace compressed by `speed`, and publish every step for Prometheus to scrape. The
cluster's GPU-tuning Jobs are played on the nodes they name (`world.tuning`), and their results
written to the ConfigMaps they name, as `climatik gpu-tune` would.

Simulated time is the wall time since start times `speed`, from `start_hour` into the scenario;
a step is the scenario's `step_s` of simulated time. A loop that falls behind (a slow machine)
runs the steps it missed, at most `MAX_CATCH_UP` at a time, then skips ahead: the world must
not drift from the controller's clock, which is the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from climatik.domain.gpu_tune_result import result_configmap
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.informer import Informer
from climatik.kube.json import JsonObject, child, text
from climatik.kube.resources import CONFIGMAPS, JOBS, NODES, PODS
from climatik.sim.scenario import Scenario
from climatik.world.publish import publish
from climatik.world.readings import Readings
from climatik.world.seats import (
    SERVICE_LABEL_KEYS,
    StartupClock,
    node_seat,
    pod_key,
    seat_pods,
    service_of,
)
from climatik.world.site import Frame, NodeSeat, Site, assign_service
from climatik.world.tally import SiteFigures
from climatik.world.tuning import TUNE_JOB_SELECTOR, TuneOutcome, TuningPlayer, read_tune_job

log = structlog.get_logger(__name__)

MAX_CATCH_UP = 10
LOG_EVERY_STEPS = 30


@dataclass
class WorldSettings:
    speed: float = 1.0
    start_hour: float = 0.0
    rack_label_key: str = "climatik-project.ai/rack"
    pod_selector: str | None = None
    namespace: str | None = None
    service_label_keys: tuple[str, ...] = SERVICE_LABEL_KEYS
    services: dict[str, str] = field(default_factory=dict)
    """Cluster service name -> scenario service, fixed by the user; others are assigned."""


class WorldLoop:
    """The site, the cluster's view of it, and what was published."""

    def __init__(
        self,
        scenario: Scenario,
        readings: Readings,
        settings: WorldSettings,
        on_step: Callable[[Frame], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.site = Site(scenario)
        self.readings = readings
        self.settings = settings
        self.on_step = on_step
        self.assigned: dict[str, str] = dict(settings.services)
        self._startup = StartupClock()
        self._published: set[str] = set()
        self._services = {s.name: s for s in scenario.services}
        self._startup_s = {s.name: s.model_class.startup_s for s in scenario.services}
        self.first_step = round(settings.start_hour * 3600.0 / scenario.step_s)
        self.last: Frame | None = None
        self.tuning = TuningPlayer(scenario)
        self.answers: list[TuneOutcome] = []
        """Tuning results due to their ConfigMaps (the driver writes them)."""
        readings.site = self.figures = SiteFigures(cap_w=scenario.caps.site_cap_w)

    def step(
        self,
        pod_objs: Sequence[JsonObject],
        node_objs: Sequence[JsonObject],
        step: int,
        job_objs: Sequence[JsonObject] = (),
    ) -> Frame:
        """One step from the cached objects: seat the pods, play the tuning Jobs, step the
        site, publish."""
        racks = self.scenario.racks
        nodes: dict[str, NodeSeat] = {}
        for obj in node_objs:
            seat = node_seat(obj, self.settings.rack_label_key, racks.gpus_per_server)
            if seat is not None:
                nodes[seat.name] = seat
        names = self._scenario_names()
        for obj in sorted(pod_objs, key=pod_key):
            name = service_of(obj, self.settings.service_label_keys)
            if name is not None and name not in self.assigned:
                self.assigned[name] = assign_service(name, self.assigned, names)
                log.info("world_service_assigned", service=name, scenario=self.assigned[name])
        now_s = step * self.scenario.step_s
        pods = seat_pods(
            pod_objs,
            nodes,
            self.assigned,
            self._startup_s,
            clock=self._startup,
            now_s=now_s,
            default_gpus=racks.gpus_per_server,
            label_keys=self.settings.service_label_keys,
        )
        orders = [o for o in map(read_tune_job, job_objs) if o is not None]
        for answer in (*self.tuning.take(orders, pods, nodes, now_s), *self.tuning.finish(now_s)):
            log.info(
                "world_tuning_done",
                job=answer.order.job,
                node=answer.order.node,
                mode=str(answer.order.mode),
                applied_mhz=answer.document.get("appliedClockMHz"),
                chosen_mhz=(answer.document.get("choice") or {}).get("clockMHz"),
                error=answer.document.get("error"),
            )
            self.answers.append(answer)
        clocks = self.tuning.clock_ratios(nodes, now_s)
        frame = self.site.step(pods, list(nodes.values()), step, node_clock=clocks)
        uids = {pod_key(o): text(child(o, "metadata"), "uid") or "" for o in pod_objs}
        self._published = publish(self.readings, frame, self._services, self._published, uids)
        self.last = frame
        self.figures.add(frame, self.scenario.step_s)
        if step % LOG_EVERY_STEPS == 0:
            log.info(
                "world_stepped",
                hour=round(now_s / 3600.0, 3),
                site_kw=round(frame.site_w / 1000.0, 2),
                supply_c=round(frame.supply_c, 2),
                services={
                    s.name: {
                        "demand_rps": round(s.demand_rps, 2),
                        "serving": s.serving,
                        "queue": round(s.queue, 1),
                    }
                    for s in frame.services
                },
            )
        if self.on_step is not None:
            self.on_step(frame)
        return frame

    def _scenario_names(self) -> list[str]:
        return [s.name for s in self.scenario.services]

    async def run(self, client: KubeClient, clock: Callable[[], float] = time.monotonic) -> None:
        """Watch pods and nodes and step at the scenario's compressed pace until cancelled."""
        pods = Informer(
            client,
            PODS,
            namespace=self.settings.namespace,
            label_selector=self.settings.pod_selector,
        )
        nodes = Informer(client, NODES, label_selector=self.settings.rack_label_key)
        jobs = Informer(client, JOBS, label_selector=TUNE_JOB_SELECTOR)
        async with asyncio.TaskGroup() as group:
            group.create_task(pods.run(), name="world-pods")
            group.create_task(nodes.run(), name="world-nodes")
            group.create_task(jobs.run(), name="world-tuning-jobs")
            await pods.wait_synced()
            await nodes.wait_synced()
            await jobs.wait_synced()
            log.info("world_started", speed=self.settings.speed, first_step=self.first_step)
            group.create_task(self._tick(client, pods, nodes, jobs, clock), name="world-steps")

    async def _tick(
        self,
        client: KubeClient,
        pods: Informer,
        nodes: Informer,
        jobs: Informer,
        clock: Callable[[], float],
    ) -> None:
        step_s = self.scenario.step_s
        period_s = step_s / self.settings.speed
        started = clock()
        done = 0
        while True:
            due = int((clock() - started) / period_s) + 1
            if due - done > MAX_CATCH_UP:
                log.warning("world_fell_behind", skipped_steps=due - done - MAX_CATCH_UP)
                done = due - MAX_CATCH_UP
            while done < due:
                try:
                    self.step(
                        pods.store.objects(),
                        nodes.store.objects(),
                        self.first_step + done,
                        jobs.store.objects(),
                    )
                except Exception:  # a bad object or a bug: say so, keep the world turning
                    log.exception("world_step_failed", step=self.first_step + done)
                done += 1
            await self._answer(client)
            await asyncio.sleep(max(0.0, started + done * period_s - clock()))

    async def _answer(self, client: KubeClient) -> None:
        """Write the finished tuning results to their ConfigMaps (create, else update), as
        `climatik gpu-tune --result-configmap` does; a refused write is logged and dropped."""
        answers, self.answers = self.answers, []
        for answer in answers:
            namespace, _, name = answer.order.result_configmap.partition("/")
            body = result_configmap(namespace, name, answer.document)
            try:
                await client.create_or_merge(CONFIGMAPS, body, {"data": body["data"]}, namespace)
            except ApiError as error:
                log.warning(
                    "world_tuning_result_refused",
                    configmap=answer.order.result_configmap,
                    reason=error.reason,
                    message=error.message,
                )
