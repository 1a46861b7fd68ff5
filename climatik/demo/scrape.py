"""The Prometheus scrape configuration for the world's families, as a real site's would be:
one job per exporter, DCGM's behind its exporter pod's own labels (so Prometheus renames the
exporter's `pod`/`namespace` to `exported_*`, as behind a ServiceMonitor), vLLM's with the
pod labels it serves kept (`honor_labels`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from climatik.kube.json import JsonDict

DCGM_TARGET_LABELS: Final[Mapping[str, str]] = {
    "namespace": "gpu-operator",
    "pod": "nvidia-dcgm-exporter-7xk2p",
    "container": "nvidia-dcgm-exporter",
}
JOBS: Final[tuple[tuple[str, str, bool, Mapping[str, str]], ...]] = (
    # (job name, metrics path, honor_labels, extra target labels)
    ("kepler", "/metrics/kepler", False, {}),
    ("kepler07", "/metrics/kepler07", False, {}),
    ("dcgm", "/metrics/dcgm", False, DCGM_TARGET_LABELS),
    ("vllm", "/metrics/vllm", True, {}),
    ("node", "/metrics/node", False, {}),
    # The world's own figures (simulated time), for the demo's summary.
    ("world", "/metrics/world", False, {}),
)


def scrape_config(target_hostport: str, scrape_interval_s: float) -> JsonDict:
    """Every job scraping `target_hostport` each `scrape_interval_s` (also the timeout)."""
    interval = f"{scrape_interval_s:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": path,
                "honor_labels": honor,
                "scrape_timeout": interval,
                "static_configs": [{"targets": [target_hostport], "labels": dict(labels)}],
            }
            for job, path, honor, labels in JOBS
        ],
    }
