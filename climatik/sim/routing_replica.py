"""One model server of the routing twin, request by request: continuous batching and its counters.

A replica holds vLLM's three sets: `waiting` (not admitted: the batch is full), the admitted
requests whose prefill has not run yet (FIFO, one at a time; a prefill stalls decoding, as
vLLM's scheduler runs prefills first) and the decoding batch. Between events the batch is
constant, so every decoding request gains one token per decode step of that batch; the replica
keeps one token clock `v` for the whole batch (processor sharing) and each request's finishing
value of it in a heap, which makes an event O(log batch) however long the run is.

Energy follows the twin's physics (`physics.py`): prefill at the GPU's prefill draw, decode at
its decode draw (flat in the batch, or per token, see `RoutingScenario.decode_power`), idle
otherwise, all at the replica's clock; the server adds its base and overhead. The counters
(tokens, GPU and server joules) are exact integrals, read at scrapes and at the end.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np

from climatik.sim import physics
from climatik.sim.routing_scenario import ReplicaGroup, RoutingScenario

INF = math.inf
_TOKEN_EPS = 1e-6
"""Tokens of float drift under which a request counts as finished."""


class Requests:
    """Every request of a run, by index in arrival order, and what became of it."""

    __slots__ = ("arrival", "finish", "first_token", "output", "prompt", "served", "timed_out")

    def __init__(self, arrival: list[float], prompt: list[int], output: list[int]) -> None:
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        n = len(arrival)
        self.first_token = [INF] * n
        self.finish = [INF] * n
        self.served = [False] * n
        self.timed_out = [False] * n


class Replica:
    """One replica's state and exact counters; the run loop calls `arrive` and `handle`."""

    __slots__ = (
        "decode_s",
        "decode_tokens",
        "decoding",
        "gpu_dec_w",
        "gpu_j",
        "gpu_pre_w",
        "group",
        "kv_capacity",
        "kv_prompt",
        "max_batch",
        "name",
        "next_event",
        "open_requests",
        "prefill_count",
        "prefill_end",
        "prefill_s",
        "prefill_sum_s",
        "prefilling",
        "requests",
        "sent",
        "srv_dec_w",
        "srv_j",
        "srv_pre_w",
        "step_s",
        "sum_v0",
        "t",
        "timeout_s",
        "tokens",
        "v",
        "waiting",
    )

    def __init__(
        self,
        name: str,
        group: ReplicaGroup,
        scenario: RoutingScenario,
        requests: Requests,
        prefill_s: list[float],
    ) -> None:
        self.name = name
        self.group = group
        self.requests = requests
        self.prefill_s = prefill_s
        """Prefill seconds of every request of the run on this replica's hardware."""
        model = scenario.model_class
        self.max_batch = model.max_batch
        self.kv_capacity = scenario.requests.kv_cache_tokens
        self.timeout_s = scenario.queue_timeout_s
        step, gpu_dec, srv_dec, gpu_pre, srv_pre = replica_physics(group, scenario)
        self.step_s: list[float] = step.tolist()
        """Decode step seconds at each batch size 0..max_batch."""
        self.gpu_dec_w: list[float] = gpu_dec.tolist()
        self.srv_dec_w: list[float] = srv_dec.tolist()
        """Draw while decoding at each batch size; index 0 is the idle draw."""
        self.gpu_pre_w, self.srv_pre_w = gpu_pre, srv_pre
        self.decoding: list[tuple[float, int]] = []
        """(value of `v` at which it finishes, request) per decoding request: a heap."""
        self.prefilling: deque[int] = deque()
        self.waiting: deque[int] = deque()
        self.prefill_end = INF
        self.v = 0.0
        self.sum_v0 = 0.0
        """Sum over decoding requests of `v` when they joined: their tokens so far follow."""
        self.kv_prompt = 0
        """Prompt tokens of the admitted requests."""
        self.t = 0.0
        self.tokens = 0.0
        self.gpu_j = 0.0
        self.srv_j = 0.0
        self.decode_s = 0.0
        """`vllm:inter_token_latency_seconds_sum`: seconds its requests spent decoding, stalls
        included (each token observes the time since its request's previous one)."""
        self.decode_tokens = 0.0
        """`vllm:inter_token_latency_seconds_count`: tokens after each request's first."""
        self.prefill_sum_s = 0.0
        self.prefill_count = 0
        """`vllm:request_prefill_time_seconds` `_sum` and `_count`."""
        self.open_requests = 0
        """The router's requests open to this replica (sent, not finished or given up)."""
        self.sent = 0
        """Requests the router sent here."""
        self.next_event = INF

    # What vLLM's /metrics shows.
    @property
    def running(self) -> int:
        """`vllm:num_requests_running`: admitted requests, in prefill or decoding."""
        return len(self.decoding) + len(self.prefilling)

    @property
    def kv_tokens(self) -> float:
        """Tokens in the KV cache: the admitted prompts and what the batch has generated."""
        decoding = len(self.decoding)
        return self.kv_prompt + decoding * (self.v + 1.0) - self.sum_v0

    @property
    def kv_cache_usage(self) -> float:
        """`vllm:kv_cache_usage_perc`."""
        return self.kv_tokens / self.kv_capacity

    def decode_tokens_per_joule(self, batch: int) -> float:
        """Exact tokens per GPU joule of decoding at `batch` (0 at an empty batch)."""
        batch = min(batch, self.max_batch)
        if batch == 0:
            return 0.0
        return batch / self.step_s[batch] / self.gpu_dec_w[batch]

    def advance(self, t: float) -> None:
        """Integrate energy and tokens up to `t` in the current phase."""
        dt = t - self.t
        if dt <= 0.0:
            return
        batch = len(self.decoding)
        self.decode_s += batch * dt
        if self.prefill_end < INF:
            self.gpu_j += self.gpu_pre_w * dt
            self.srv_j += self.srv_pre_w * dt
        else:
            self.gpu_j += self.gpu_dec_w[batch] * dt
            self.srv_j += self.srv_dec_w[batch] * dt
            if batch:
                dv = dt / self.step_s[batch]
                self.v += dv
                self.tokens += batch * dv
                self.decode_tokens += batch * dv
        self.t = t

    def arrive(self, rid: int, t: float) -> None:
        """A request sent by the router at `t`."""
        self.advance(t)
        self.open_requests += 1
        self.sent += 1
        self.waiting.append(rid)
        self._admit(t)
        self._schedule()

    def handle(self, t: float) -> None:
        """Whatever is due at `t`: a prefill's end, finished requests, queue timeouts."""
        self.advance(t)
        req = self.requests
        if self.prefill_end <= t:
            rid = self.prefilling.popleft()
            req.first_token[rid] = t
            self.prefill_sum_s += self.prefill_s[rid]
            self.prefill_count += 1
            self.tokens += 1.0
            if req.output[rid] > 1:
                heapq.heappush(self.decoding, (self.v + req.output[rid] - 1, rid))
                self.sum_v0 += self.v
            else:
                self._finish(rid, t)
            self.prefill_end = t + self.prefill_s[self.prefilling[0]] if self.prefilling else INF
        elif self.decoding and self.decoding[0][0] <= self.v + _TOKEN_EPS:
            self.v = max(self.v, self.decoding[0][0])
            while self.decoding and self.decoding[0][0] <= self.v + _TOKEN_EPS:
                finish_v, rid = heapq.heappop(self.decoding)
                self.sum_v0 -= finish_v - (req.output[rid] - 1)
                self._finish(rid, t)
            if not self.decoding:
                self.sum_v0 = 0.0
        while self.waiting and req.arrival[self.waiting[0]] + self.timeout_s <= t:
            rid = self.waiting.popleft()
            req.timed_out[rid] = True
            req.finish[rid] = t
            self.open_requests -= 1
        self._admit(t)
        self._schedule()

    def finish_at(self, t: float) -> None:
        """Close the counters at the end of the run."""
        self.advance(t)

    def _finish(self, rid: int, t: float) -> None:
        req = self.requests
        req.finish[rid] = t
        req.served[rid] = True
        self.kv_prompt -= req.prompt[rid]
        self.open_requests -= 1

    def _admit(self, t: float) -> None:
        """vLLM's scheduler: admit from the queue while the batch and KV cache have room."""
        req = self.requests
        while self.waiting and self.running < self.max_batch:
            rid = self.waiting[0]
            if self.kv_tokens + req.prompt[rid] > self.kv_capacity and self.running:
                break
            self.waiting.popleft()
            self.kv_prompt += req.prompt[rid]
            self.prefilling.append(rid)
            if self.prefill_end == INF:
                self.prefill_end = t + self.prefill_s[rid]

    def _schedule(self) -> None:
        if self.prefill_end < INF:
            nxt = self.prefill_end
        elif self.decoding:
            batch = len(self.decoding)
            nxt = self.t + max(self.decoding[0][0] - self.v, 0.0) * self.step_s[batch]
        else:
            nxt = INF
        if self.waiting:
            nxt = min(nxt, self.requests.arrival[self.waiting[0]] + self.timeout_s)
        self.next_event = nxt


def replica_physics(
    group: ReplicaGroup, scenario: RoutingScenario
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Decode step seconds, GPU and server decode draw at each batch 0..max_batch (index 0 the
    idle draw), and the GPU and server draw while prefilling, from `physics.py`."""
    model = scenario.model_class
    max_batch = model.max_batch
    ratio = group.clock_ratio
    gpu = group.gpu
    server = scenario.server
    _, decode_slowdown = group.slowdown
    batch = np.arange(max_batch + 1, dtype=np.float64)
    step = physics.decode_step_s(model, batch / max_batch, ratio) * decode_slowdown
    if scenario.decode_power == "flat":
        busy = np.where(batch > 0, 1.0, 0.0)
    else:  # per token: the share of a full batch's tokens per second
        busy = (batch / step) / (max_batch / step[max_batch])
    gpu_dec = physics.gpu_power_w(ratio, 0.0, busy, gpu)
    srv_dec = physics.server_power_w(
        gpu_dec, server.gpus, gpu.idle_w, server.base_w, server.gpu_overhead
    )
    gpu_pre = float(physics.gpu_power_w(ratio, 1.0, 0.0, gpu))
    srv_pre = float(
        physics.server_power_w(gpu_pre, server.gpus, gpu.idle_w, server.base_w, server.gpu_overhead)
    )
    return step, gpu_dec * server.gpus, srv_dec, gpu_pre * server.gpus, srv_pre


def prefill_seconds(
    group: ReplicaGroup, scenario: RoutingScenario, prompt: list[int]
) -> list[float]:
    """Prefill time of each prompt on the group's hardware and clock (`physics.prefill_s` once
    per distinct length)."""
    prefill_slowdown, _ = group.slowdown
    model, ratio = scenario.model_class, group.clock_ratio
    table = {
        tokens: float(physics.prefill_s(model, tokens, ratio)) * prefill_slowdown
        for tokens in set(prompt)
    }
    return [table[tokens] for tokens in prompt]
