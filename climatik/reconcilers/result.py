"""What a reconcile returns (controller-runtime's contract), shared by reconcilers and runtime.

It lives at the reconcilers' layer so reconcilers can return it without importing the runtime
that drives them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """`Result()`: done; `requeue_after=s`: look again in s seconds.

    There is no "requeue with backoff" result (controller-runtime deprecated its `Requeue`): a
    reconcile that failed raises, and the worker backs off; a status write that lost a race is
    retried inside the write, on a fresh read (`status_writer`)."""

    requeue_after: float | None = None


class TerminalError(Exception):
    """An error retrying cannot fix (say what the user must change in the message)."""
