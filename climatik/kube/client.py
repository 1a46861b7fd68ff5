"""One shared, timed, raw-JSON Kubernetes client over kubernetes-asyncio's ``ApiClient``.

Why not the generated ``CoreV1Api`` & co.: they deserialize into model classes (slow, and useless
for custom resources), they have no timeout unless one is passed on every call, and their watch
retries a 410 with the stale version. This module keeps kubernetes-asyncio for what it does well
(kubeconfig / in-cluster loading, TLS, token refresh, one aiohttp session) and talks to the REST
paths directly, returning plain ``dict`` JSON.

Guarantees:
- Every request runs under a deadline (``request_timeout_s`` unless the caller gives one).
- Non-2xx answers raise :class:`ApiError` carrying the ``Status`` body (``is_conflict``,
  ``is_not_found``, ``is_gone``).
- Patches use an explicit ``application/merge-patch+json`` content type, for core and custom
  resources alike, including the ``status`` subresource.
- Every mutating call first asks the injected write gate; when leadership is lost the gate says no
  and the call raises :class:`NotLeaderError` without touching the network. Lease renewals use
  ``ungated=True`` because they are how leadership is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from climatik.domain.errors import EXIT_RUNTIME_FAILURE, UserError
from climatik.kube.kubeconfig import KubeConfigError, current_context, in_cluster_namespace
from climatik.kube.resources import Resource

JsonObject = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
_AUTH_SETTINGS = ["BearerToken"]
HTTP_NOT_FOUND = 404
HTTP_FORBIDDEN = 403
HTTP_CONFLICT = 409
HTTP_GONE = 410


class ApiError(Exception):
    """A non-2xx answer from the API server, with its ``Status`` body when it sent one."""

    def __init__(
        self, status: int, body: Mapping[str, Any] | None = None, method: str = ""
    ) -> None:
        self.status = status
        self.body: Mapping[str, Any] = body or {}
        self.reason = str(self.body.get("reason", ""))
        self.message = str(self.body.get("message", ""))
        super().__init__(f"{method} -> HTTP {status} {self.reason}: {self.message}".strip())

    @property
    def is_not_found(self) -> bool:
        return self.status == HTTP_NOT_FOUND

    @property
    def is_forbidden(self) -> bool:
        """RBAC said no: an expected answer where a grant is opt-in per namespace."""
        return self.status == HTTP_FORBIDDEN

    @property
    def is_conflict(self) -> bool:
        return self.status == HTTP_CONFLICT

    @property
    def is_gone(self) -> bool:
        return self.status == HTTP_GONE or self.reason in {"Expired", "Gone"}


class KubeUnreachableError(UserError):
    """The API server did not answer; the message names its address."""

    exit_status = EXIT_RUNTIME_FAILURE


class NotLeaderError(RuntimeError):
    """A write was attempted by a replica that does not (or no longer) hold the leader lease."""


def _always_allowed() -> bool:
    return True


class KubeClient:
    """Raw-JSON verbs on one shared ``ApiClient``; close it once at shutdown."""

    def __init__(
        self,
        api_client: Any,
        *,
        request_timeout_s: float = 30.0,
        write_gate: Callable[[], bool] = _always_allowed,
        default_namespace: str = "default",
    ) -> None:
        self.api_client = api_client
        self.request_timeout_s = request_timeout_s
        self.write_gate = write_gate
        self.default_namespace = default_namespace
        """The kubeconfig context's namespace (or the pod's): where a command looks by default."""

    @classmethod
    async def from_config(
        cls, kubeconfig: str | None = None, *, request_timeout_s: float = 30.0
    ) -> KubeClient:
        """Load a kubeconfig (explicit path, ``$KUBECONFIG``, ``~/.kube/config``) or in-cluster.

        Raises :class:`KubeConfigError` saying what to fix when no usable kubeconfig is found.
        """
        configuration = k8s_client.Configuration()
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            namespace = in_cluster_namespace()
        else:
            context = current_context(kubeconfig)
            files = os.pathsep.join(map(str, context.files))
            try:
                await k8s_config.load_kube_config(
                    config_file=files, client_configuration=configuration, persist_config=False
                )
            except (k8s_config.ConfigException, TypeError, AttributeError, ValueError) as error:
                # The shapes kubernetes-asyncio trips over: a context naming a missing cluster
                # or user, a list where a mapping belongs, an unreadable certificate.
                msg = f"kubeconfig {files} (context {context.name!r}) cannot be used: {error}"
                raise KubeConfigError(msg) from error
            namespace = context.namespace
        return cls(
            k8s_client.ApiClient(configuration),
            request_timeout_s=request_timeout_s,
            default_namespace=namespace,
        )

    @property
    def server(self) -> str:
        """The API server's URL, for messages."""
        return str(self.api_client.configuration.host)

    async def check_reachable(self, timeout_s: float = 10.0) -> None:
        """Ask the API server its version; raise :class:`KubeUnreachableError` if it cannot be
        reached, so a command fails with the server's address instead of a connector stack."""
        try:
            await self.request("GET", "/version", timeout_s=timeout_s)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            reason = str(error) or f"no answer within {timeout_s:g} s"
            msg = (
                f"cannot reach the Kubernetes API server at {self.server}: {reason}; "
                "check that the cluster is running and the kubeconfig's server address"
            )
            raise KubeUnreachableError(msg) from error

    @classmethod
    def for_url(cls, url: str, *, request_timeout_s: float = 30.0) -> KubeClient:
        """A client for a plain URL without credentials (local proxies, test servers)."""
        configuration = k8s_client.Configuration(host=url)
        return cls(k8s_client.ApiClient(configuration), request_timeout_s=request_timeout_s)

    async def close(self) -> None:
        await self.api_client.close()

    # -- plumbing ---------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        client_timeout: aiohttp.ClientTimeout | float | None = None,
    ) -> aiohttp.ClientResponse:
        query_params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        response = await self.api_client.call_api(
            path,
            method,
            query_params=query_params,
            header_params=headers,
            body=body,
            auth_settings=_AUTH_SETTINGS,
            _preload_content=False,
            _request_timeout=(
                client_timeout if client_timeout is not None else self.request_timeout_s
            ),
        )
        return cast(aiohttp.ClientResponse, response)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
        ungated: bool = False,
    ) -> JsonObject:
        """Send one request under a deadline and return its JSON body; raise ApiError on non-2xx."""
        if method != "GET" and not ungated and not self.write_gate():
            raise NotLeaderError(f"{method} {path} refused: this replica is not the leader")
        deadline_s = timeout_s if timeout_s is not None else self.request_timeout_s
        async with asyncio.timeout(deadline_s):
            response = await self._send(
                method,
                path,
                query=query,
                body=body,
                content_type=content_type,
                client_timeout=deadline_s,
            )
            async with response:
                raw = await response.read()
        if not 200 <= response.status <= 299:
            # Error bodies are usually a Status object, but not always ("404 page not found").
            try:
                parsed: Any = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"message": raw.decode(errors="replace").strip()}
            status_body = parsed if isinstance(parsed, dict) else {"message": str(parsed)}
            raise ApiError(response.status, status_body, f"{method} {path}")
        return cast(JsonObject, json.loads(raw) if raw else {})

    async def open_stream(
        self, path: str, query: Mapping[str, Any], client_timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """Open a long GET (a watch); the caller reads it and must close it. Non-2xx raises."""
        response = await self._send("GET", path, query=query, client_timeout=client_timeout)
        if not 200 <= response.status <= 299:
            async with response:
                raw = await response.read()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"message": raw.decode(errors="replace")}
            raise ApiError(response.status, parsed if isinstance(parsed, dict) else {}, path)
        return response

    # -- verbs ------------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> JsonObject:
        return await self.request("GET", resource.path(namespace, name))

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        timeout_s: float | None = None,
    ) -> JsonObject:
        """One page of a list (``items``, ``metadata.resourceVersion``, ``metadata.continue``)."""
        query = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": limit,
            "continue": continue_token,
        }
        return await self.request("GET", resource.path(namespace), query=query, timeout_s=timeout_s)

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None, **kw: Any
    ) -> JsonObject:
        return await self.request("POST", resource.path(namespace), body=dict(body), **kw)

    async def replace(
        self,
        resource: Resource,
        name: str,
        body: Mapping[str, Any],
        namespace: str | None = None,
        **kw: Any,
    ) -> JsonObject:
        """A full update; carries ``metadata.resourceVersion`` so a lost race answers 409."""
        return await self.request("PUT", resource.path(namespace, name), body=dict(body), **kw)

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> JsonObject:
        """A JSON merge patch (RFC 7386); ``subresource="status"`` patches only the status."""
        return await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=dict(patch),
            content_type=MERGE_PATCH,
        )

    async def create_or_merge(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        patch: Mapping[str, Any],
        namespace: str | None = None,
    ) -> JsonObject:
        """Create `body`, or merge `patch` into the object of its name that already exists."""
        try:
            return await self.create(resource, body, namespace)
        except ApiError as error:
            if not error.is_conflict:  # AlreadyExists
                raise
        name = str(body["metadata"]["name"])
        return await self.merge_patch(resource, name, patch, namespace)

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> JsonObject:
        return await self.request("DELETE", resource.path(namespace, name))
