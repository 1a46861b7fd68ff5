"""The controller's Prometheus metrics, on a dedicated registry (no global state, test-friendly).

Names follow controller-runtime's with our prefix: ``climatik_reconcile_total{controller,result}``
(``result="timed_out"``: cancelled at the controller's reconcile deadline),
``climatik_reconcile_time_seconds``, ``climatik_workqueue_{depth,adds_total,retries_total,
queue_duration_seconds}{name}``, ``climatik_watch_restarts_total{resource,reason}``,
``climatik_watch_relists_total{resource}``, ``climatik_leader_is_leader`` and
``climatik_build_info{version}``. The class also implements the kube layer's metric hook protocols
(``ReflectorMetrics``, ``WorkQueueMetrics``), so the kube package never imports prometheus_client.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from climatik import __version__

_RECONCILE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_QUEUE_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300)


class RuntimeMetrics:
    """Every runtime metric, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_total = Counter(
            "climatik_reconcile_total",
            "Reconciles by controller and result (success, requeue, requeue_after, error, "
            "terminal_error, not_leader, timed_out).",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_time = Histogram(
            "climatik_reconcile_time_seconds",
            "Duration of one reconcile.",
            ["controller"],
            buckets=_RECONCILE_BUCKETS_S,
            registry=r,
        )
        self.requeue_lead = Gauge(
            "climatik_requeue_lead_seconds",
            "How much earlier than one interval after it was due a polled key is queued again: "
            "the p99 of the controller's recent lateness, at most a tenth of the interval.",
            ["controller"],
            registry=r,
        )
        self.workqueue_depth = Gauge(
            "climatik_workqueue_depth", "Keys ready in the work queue.", ["name"], registry=r
        )
        self.workqueue_adds = Counter(
            "climatik_workqueue_adds_total", "Keys added to the work queue.", ["name"], registry=r
        )
        self.workqueue_retries = Counter(
            "climatik_workqueue_retries_total", "Rate-limited re-adds.", ["name"], registry=r
        )
        self.workqueue_wait = Histogram(
            "climatik_workqueue_queue_duration_seconds",
            "Time a key waited in the queue before a worker took it.",
            ["name"],
            buckets=_QUEUE_BUCKETS_S,
            registry=r,
        )
        self.watch_restarts = Counter(
            "climatik_watch_restarts_total",
            "Watch connections ended and reopened, by reason (closed, silent, gone, error).",
            ["resource", "reason"],
            registry=r,
        )
        self.watch_relists = Counter(
            "climatik_watch_relists_total",
            "Full relists after the first list (410 Gone).",
            ["resource"],
            registry=r,
        )
        self.leader_is_leader = Gauge(
            "climatik_leader_is_leader", "1 while this replica holds the lease.", registry=r
        )
        self.build_info = Gauge(
            "climatik_build_info", "Always 1; labels carry the version.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)
        # Labelled children cached per name: `labels()` costs more than a no-op reconcile.
        self._queue_children: dict[str, tuple[Gauge, Counter, Counter, Histogram]] = {}
        self._reconcile_children: dict[tuple[str, str], Counter] = {}
        self._lead_children: dict[str, Gauge] = {}
        self._reconcile_time_children: dict[str, Histogram] = {}

    def _queue(self, name: str) -> tuple[Gauge, Counter, Counter, Histogram]:
        children = self._queue_children.get(name)
        if children is None:
            children = (
                self.workqueue_depth.labels(name=name),
                self.workqueue_adds.labels(name=name),
                self.workqueue_retries.labels(name=name),
                self.workqueue_wait.labels(name=name),
            )
            self._queue_children[name] = children
        return children

    def requeue_led(self, controller: str, lead_s: float) -> None:
        """The lead the controller's last polled key was queued again with (every polled
        reconcile sets it: its child is kept, as the reconcile counters' are)."""
        gauge = self._lead_children.get(controller)
        if gauge is None:
            gauge = self._lead_children[controller] = self.requeue_lead.labels(
                controller=controller
            )
        gauge.set(lead_s)

    def reconciled(self, controller: str, result: str, seconds: float) -> None:
        """Count one reconcile and observe its duration."""
        counter = self._reconcile_children.get((controller, result))
        if counter is None:
            counter = self.reconcile_total.labels(controller=controller, result=result)
            self._reconcile_children[(controller, result)] = counter
        counter.inc()
        histogram = self._reconcile_time_children.get(controller)
        if histogram is None:
            histogram = self.reconcile_time.labels(controller=controller)
            self._reconcile_time_children[controller] = histogram
        histogram.observe(seconds)

    # -- ReflectorMetrics -------------------------------------------------------------------

    def watch_restarted(self, resource: str, reason: str) -> None:
        self.watch_restarts.labels(resource=resource, reason=reason).inc()

    def relisted(self, resource: str) -> None:
        self.watch_relists.labels(resource=resource).inc()

    # -- WorkQueueMetrics -------------------------------------------------------------------

    def added(self, queue: str) -> None:
        self._queue(queue)[1].inc()

    def depth(self, queue: str, depth: int) -> None:
        self._queue(queue)[0].set(depth)

    def retried(self, queue: str) -> None:
        self._queue(queue)[2].inc()

    def waited(self, queue: str, seconds: float) -> None:
        self._queue(queue)[3].observe(seconds)
