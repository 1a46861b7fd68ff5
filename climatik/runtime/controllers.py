"""The controllers ``climatik run`` starts: the one place to plug a reconciler in.

A controller factory takes the manager (as a :class:`~climatik.runtime.reconcile.ControllerContext`:
shared informers, new work queues, the client, the event recorder, the controllers' settings read
once at start) and returns a
:class:`~climatik.runtime.reconcile.Controller`. Add built-in factories to ``BUILTIN_CONTROLLERS``;
extra ones can be named at run time by import path (``CLIMATIK_EXTRA_CONTROLLERS``), which is how
the integration tests run their probe controller inside a real ``climatik run`` process.

``CLIMATIK_GPU_TUNING__ENABLED=false`` leaves the GPU-tuning controller out of the list, so none
of its informers exist: an installation without the tuning namespace and its Role (where those
informers would be refused) still reconciles everything else. The power-cap controller then
simply never receives a tuning hint.

The VPA-hold controller runs only with ``CLIMATIK_VPA__ENABLED=true``: it watches
VerticalPodAutoscalers, which a cluster without VPA's CRD does not serve.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import structlog

from climatik.runtime.capping import (
    carbon_controller,
    gpu_tuning_controller,
    power_cap_controller,
)
from climatik.runtime.placement import placement_controller
from climatik.runtime.reconcile import ControllerFactory
from climatik.runtime.settings import ControllerSettings
from climatik.runtime.vpa import vpa_hold_controller

log = structlog.get_logger(__name__)

BUILTIN_CONTROLLERS: tuple[ControllerFactory, ...] = (
    power_cap_controller,
    carbon_controller,
    placement_controller,
    gpu_tuning_controller,
)


def load_factory(path: str) -> ControllerFactory:
    """Import ``package.module:attribute`` and return it; raise ValueError naming the problem."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"controller factory {path!r} must look like 'package.module:factory'")
    module = importlib.import_module(module_name)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{path!r} is not a callable controller factory")
    return factory  # type: ignore[no-any-return]


def controller_factories(
    settings: ControllerSettings, extra: Sequence[str] = ()
) -> list[ControllerFactory]:
    """The built-in factories the settings switch on, then the extra ones named by import path.

    Pass the manager the same ``settings``: its factories read them as ``ctx.controller_settings``.
    """
    gpu_tuning = settings.gpu_tuning
    builtin = list(BUILTIN_CONTROLLERS)
    if not gpu_tuning.enabled:
        builtin.remove(gpu_tuning_controller)
        log.info(
            "gpu_tuning_disabled",
            reason="CLIMATIK_GPU_TUNING__ENABLED=false",
            unwatched_namespace=gpu_tuning.job_namespace,
        )
    if settings.vpa.enabled:
        builtin.append(vpa_hold_controller)
    return [*builtin, *(load_factory(path) for path in extra)]
