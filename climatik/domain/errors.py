"""Errors a user can cause and fix, and how the command line reports them.

Every layer raises its own subclass of :class:`UserError` (a bad scenario, a kubeconfig that
cannot be read, an unreachable API server); the command line prints the message as one line and
exits with the error's status, never with a traceback. The message says what is wrong and what
to do about it, so it needs no context around it.
"""

from __future__ import annotations

EXIT_RUNTIME_FAILURE = 1
"""Something outside the command failed: an unreachable server, a file that cannot be written."""
EXIT_USAGE = 2
"""The command line or a configuration it reads is wrong (argparse's own status for usage)."""
EXIT_INTERRUPTED = 130
"""128 + SIGINT, the shell's status for a command stopped by Ctrl-C."""


class UserError(Exception):
    """An error whose message tells the user what to fix; `exit_status` is the process's."""

    exit_status: int = EXIT_USAGE


class UsageError(UserError):
    """Options that cannot work together, beyond what argparse checks itself."""


def describe_yaml_error(error: Exception, origin: str) -> str:
    """One line for a YAML parse error: where in `origin` (a file name) and what went wrong.

    PyYAML's own text spans several lines and names ``<unicode string>`` when it parsed a
    string; its marks (0-based) and problem are what a person needs. Duck-typed so that this
    layer need not import PyYAML.
    """
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "reason", None) or str(error)
    context = getattr(error, "context", None)
    where = origin if mark is None else f"{origin}, line {mark.line + 1}, column {mark.column + 1}"
    return f"{where}: {problem}" + (f" ({context})" if context else "")
