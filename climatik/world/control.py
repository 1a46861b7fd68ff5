"""The scrape target's HTTP face: `/metrics[/<family>]` for Prometheus, and JSON control
endpoints for whoever plays the datacenter (a test, or the world's driver in-process).

- `POST /pods` `{"pods": [{"namespace", "name", "node", "cpu_watts", "gpu_watts", "gpus",
  "tokens_per_s", "waiting_requests", "running_requests", "tokens_per_request", "model_name",
  "noise", "timestamped"}]}` adds or updates pods (omitted fields keep their values);
- `POST /set` `{"<namespace>/<name>": {"cpu_watts": 120, "frozen": true}}` changes values;
  `"NaN"`/`"+Inf"` strings serve NaN/Inf; `frozen` needs a pod created `timestamped`;
- `POST /nodes` `{"<node>": {"idle_cpu_watts": 40, "inlet_c": 24.5}}`;
- `DELETE /pods/<namespace>/<name>`, `POST /reset`, `GET /state`.

A bad body answers 400 with what is wrong; an unknown pod 404.
"""

from __future__ import annotations

import json
import random

from aiohttp import web

from climatik.kube.json import JsonValue
from climatik.world.exposition import CONTENT_TYPE, FAMILIES, render
from climatik.world.readings import Readings

READINGS_KEY = web.AppKey("readings", Readings)


async def _read_json(request: web.Request) -> JsonValue:
    try:
        body: JsonValue = json.loads(await request.text())
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}\n") from exc
    return body


def build_app(readings: Readings, rng: random.Random | None = None) -> web.Application:
    """The application serving `readings`; `rng` jitters noisy gauges (seed it in tests)."""
    jitter = rng or random.Random()  # noqa: S311 - meter noise, not secrets

    async def metrics(request: web.Request) -> web.Response:
        family = request.match_info.get("family", "all")
        if family != "all" and family not in FAMILIES:
            raise web.HTTPNotFound(text=f"unknown family {family}\n")
        return web.Response(
            body=render(readings, family, jitter).encode(),
            headers={"Content-Type": CONTENT_TYPE},
        )

    async def post_pods(request: web.Request) -> web.Response:
        body = await _read_json(request)
        specs = body.get("pods", []) if isinstance(body, dict) else body
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise web.HTTPBadRequest(text='expected {"pods": [objects]}\n')
        try:
            pods = [readings.upsert(spec) for spec in specs if isinstance(spec, dict)]
        except (KeyError, ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad pod spec: {exc}\n") from exc
        return web.json_response({"pods": [p.key for p in pods]})

    async def post_set(request: web.Request) -> web.Response:
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected an object of pod keys\n")
        try:
            for key, values in body.items():
                if not isinstance(values, dict):
                    raise TypeError(f"{key}: expected an object of values")
                readings.set_values(key, values)
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"no pod {exc}\n") from exc
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad value: {exc}\n") from exc
        return web.json_response({"updated": sorted(body)})

    async def post_nodes(request: web.Request) -> web.Response:
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected an object of node names\n")
        try:
            for name, values in body.items():
                if not isinstance(values, dict):
                    raise TypeError(f"{name}: expected an object of values")
                readings.set_node(name, values)
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad value: {exc}\n") from exc
        return web.json_response({"updated": sorted(body)})

    async def delete_pod(request: web.Request) -> web.Response:
        readings.delete(f"{request.match_info['namespace']}/{request.match_info['name']}")
        return web.json_response({"deleted": True})

    async def post_reset(request: web.Request) -> web.Response:
        readings.reset()
        return web.json_response({"reset": True})

    async def get_state(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(readings.state()), content_type="application/json")

    app = web.Application()
    app[READINGS_KEY] = readings
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/metrics/{family}", metrics)
    app.router.add_post("/pods", post_pods)
    app.router.add_post("/set", post_set)
    app.router.add_post("/nodes", post_nodes)
    app.router.add_delete("/pods/{namespace}/{name}", delete_pod)
    app.router.add_post("/reset", post_reset)
    app.router.add_get("/state", get_state)
    return app
