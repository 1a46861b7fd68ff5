"""Replaying a twin trace through the live path: backfill it into a fresh Prometheus, and read
that Prometheus at the trace's decision times (`tests/integration/test_replay.py`)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from climatik.sources.prometheus import PrometheusClient, PrometheusSettings
from climatik.sources.prometheus_results import (
    InstantResult,
    PodSamples,
    PrometheusUnreachableError,
    RangeResult,
)
from tests.integration.helpers.prometheus import free_port


def backfill(promtool: Path, openmetrics: str, data_dir: Path) -> None:
    """`promtool tsdb create-blocks-from openmetrics` of the text into `data_dir`."""
    source = data_dir.parent / "trace.om"
    source.write_text(openmetrics)
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(promtool), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass
class BackfilledPrometheus:
    """A Prometheus that scrapes nothing and serves the blocks of `data_dir`."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve_blocks(binary: Path, data_dir: Path, timeout_s: float = 60.0) -> BackfilledPrometheus:
    """Start the real Prometheus on a backfilled TSDB directory, ready to answer."""
    config = data_dir.parent / "prometheus.yml"
    config.write_text("global: {}\n")
    port = free_port()
    with (data_dir.parent / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address=127.0.0.1:{port}",
                # The trace lies hours in the past; keep it.
                "--storage.tsdb.retention.time=30d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = BackfilledPrometheus(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1.0) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"prometheus not ready within {timeout_s:g} s")


class PrometheusAt:
    """A `PrometheusClient` that evaluates every instant query at `at_s` (settable): the live
    sources read the past through it exactly as they read the present. While not `reachable`
    every query fails as an unreachable server's does (the twin's measurement outages: a
    backfilled TSDB can lack samples, but not be down)."""

    def __init__(self, client: PrometheusClient) -> None:
        self._client = client
        self.at_s = 0.0
        self.reachable = True

    def _check_reachable(self, promql: str) -> None:
        if not self.reachable:
            raise PrometheusUnreachableError("the trace records an outage", query=promql)

    @property
    def address(self) -> str:
        return self._client.address

    @property
    def settings(self) -> PrometheusSettings:
        return self._client.settings

    def now(self) -> float:
        """The clock the sources judge sample ages by: the replayed time."""
        return self.at_s

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: float | Literal["default"] | None = "default",
        check_age: bool = True,
    ) -> InstantResult:
        del check_age  # judged by the sources' own clock, at the replayed time
        self._check_reachable(promql)
        return await self._client.query(
            promql,
            at_s=self.at_s if at_s is None else at_s,
            lookback_delta_s=lookback_delta_s,
            check_age=False,
        )

    async def query_range(
        self,
        promql: str,
        *,
        start_s: float,
        end_s: float,
        step_s: float,
        lookback_delta_s: float | Literal["default"] | None = "default",
        grouped: bool = False,
    ) -> RangeResult:
        self._check_reachable(promql)
        return await self._client.query_range(
            promql,
            start_s=start_s,
            end_s=end_s,
            step_s=step_s,
            lookback_delta_s=lookback_delta_s,
            grouped=grouped,
        )

    async def query_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: float | Literal["default"] | None = "default",
        asked_after_s: float | None = None,
    ) -> PodSamples:
        self._check_reachable(promql)
        return await self._client.query_by_pod(
            promql,
            namespace_label=namespace_label,
            pod_label=pod_label,
            lookback_delta_s=lookback_delta_s,
            asked_after_s=asked_after_s,
            at_s=self.at_s,
        )
