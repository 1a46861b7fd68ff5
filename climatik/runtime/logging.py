"""structlog configuration: JSON lines in a cluster, coloured console lines on a terminal.

Every line carries a UTC timestamp, the level and whatever the caller bound through
``structlog.contextvars`` (the reconcile workers bind ``controller``, ``key`` and ``reconcile_id``),
so one reconcile can be followed across modules. Event names are snake_case, past tense
(``lease_acquired``, ``reconcile_failed``).

Tracebacks name files, lines and functions but never render frame locals (structlog's and
rich's default): a request's headers, an API key or a Secret's data in scope when something
raised must not reach the logs.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}

_JSON_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _console_tracebacks() -> structlog.typing.ExceptionRenderer:
    """Rich's coloured traceback without locals when rich is installed, else the plain one
    (never better-exceptions, which prints every variable's value)."""
    if importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [
            _JSON_TRACEBACKS,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(exception_formatter=_console_tracebacks()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.ERROR)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
