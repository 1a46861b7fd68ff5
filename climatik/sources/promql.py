"""Safe PromQL building: escaping label values and regexes, validating names, and templates.

Pod names, namespaces and rack ids end up inside PromQL label matchers. Kubernetes names are
tame, but rack ids and template values come from users, so every value goes through
`quote_string` (a double-quoted PromQL string literal that contains no quote, backtick,
backslash escape of its own or control character) and every regex alternation through
`regex_alternation` (RE2 metacharacters escaped, so a pod named `a.b` never matches `axb`).
Prometheus anchors `=~` regexes at both ends, so an alternation matches whole names only.

Templates: a configured query may use `$namespace`, `$pods`, `$rack` and `$nodes` (or the
`${name}` form); `$$` is a literal dollar sign. Each placeholder expands to the *content* of a
double-quoted string, so write it inside double quotes: `pod=~"$pods"`, `namespace="$namespace"`.
`$pods` and `$nodes` expand to escaped regex alternations for `=~`; `$namespace` and `$rack` to
escaped plain values for `=`. An unknown placeholder is an error (a typo must not silently reach
Prometheus).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

_LABEL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METRIC_NAME: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_DURATION: Final = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
# RE2 metacharacters; escaping them with a backslash is valid RE2 for every one of them.
_RE2_META: Final = frozenset("\\.+*?()|[]{}^$")
_PLACEHOLDER: Final = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_]\w*)\}|(?P<bare>[A-Za-z_]\w*))")

PLACEHOLDERS: Final = frozenset({"namespace", "pods", "rack", "nodes"})


class QueryTemplateError(ValueError):
    """A configured query or name cannot be used; the message says what to change."""


def quote_string(value: str) -> str:
    """Return `value` as a double-quoted PromQL string literal."""
    return f'"{escape_string_content(value)}"'


def escape_string_content(value: str) -> str:
    """Escape `value` for use between double quotes in PromQL.

    Quotes of every kind and control characters become `\\xNN`, backslashes `\\\\`, so the result
    is safe inside "..." and '...' and never closes a `...` raw string either.
    """
    out: list[str] = []
    for char in value:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif char in "\"'`" or code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(char)
    return "".join(out)


def regex_escape(value: str) -> str:
    """Escape RE2 metacharacters so `value` matches itself literally."""
    return "".join(f"\\{c}" if c in _RE2_META else c for c in value)


def regex_alternation(values: Iterable[str]) -> str:
    """A regex matching exactly the given values (sorted, deduplicated, escaped).

    Raises on an empty set: `label=~""` matches series *without* the label, the opposite of
    "none of them".
    """
    unique = sorted(set(values))
    if not unique:
        raise QueryTemplateError("cannot build a regex for an empty set of names")
    if any(not v for v in unique):
        raise QueryTemplateError("names in a regex alternation must not be empty")
    return "|".join(regex_escape(v) for v in unique)


def check_label_name(name: str) -> str:
    if not _LABEL_NAME.fullmatch(name):
        raise QueryTemplateError(f"{name!r} is not a valid Prometheus label name")
    return name


def check_metric_name(name: str) -> str:
    if not _METRIC_NAME.fullmatch(name):
        raise QueryTemplateError(f"{name!r} is not a valid Prometheus metric name")
    return name


def check_duration(duration: str) -> str:
    if not _DURATION.fullmatch(duration):
        raise QueryTemplateError(f"{duration!r} is not a Prometheus duration such as 1m or 30s")
    return duration


def matcher(label: str, value: str) -> str:
    """`label="value"`, escaped."""
    return f"{check_label_name(label)}={quote_string(value)}"


def regex_matcher(label: str, values: Iterable[str]) -> str:
    """`label=~"a|b"`, matching exactly the given values."""
    return f"{check_label_name(label)}=~{quote_string(regex_alternation(values))}"


def selector(metric: str, matchers: Iterable[str]) -> str:
    """`metric{m1,m2}` from already-built matchers."""
    return f"{check_metric_name(metric)}{{{','.join(matchers)}}}"


def template_placeholders(template: str) -> frozenset[str]:
    """The placeholder names a template uses (raises on unknown ones)."""
    used: set[str] = set()
    for match in _PLACEHOLDER.finditer(template):
        name = match.group("braced") or match.group("bare")
        if name is None:
            continue  # `$$`
        if name not in PLACEHOLDERS:
            known = ", ".join(f"${p}" for p in sorted(PLACEHOLDERS))
            raise QueryTemplateError(
                f"unknown placeholder ${name} in query {template!r} (known: {known}; "
                "write $$ for a literal $)"
            )
        used.add(name)
    return frozenset(used)


def render_template(
    template: str,
    *,
    namespace: str | None = None,
    pods: Iterable[str] | None = None,
    rack: str | None = None,
    nodes: Iterable[str] | None = None,
) -> str:
    """Expand the placeholders of `template` with escaped values.

    A placeholder the template uses but the caller did not provide is an error, so a per-rack
    template is never run as a per-target one by mistake.
    """
    used = template_placeholders(template)
    values: dict[str, str] = {}
    if namespace is not None:
        values["namespace"] = escape_string_content(namespace)
    if pods is not None:
        values["pods"] = escape_string_content(regex_alternation(pods))
    if rack is not None:
        values["rack"] = escape_string_content(rack)
    if nodes is not None:
        values["nodes"] = escape_string_content(regex_alternation(nodes))
    missing = used - values.keys()
    if missing:
        names = ", ".join(f"${m}" for m in sorted(missing))
        raise QueryTemplateError(f"query {template!r} uses {names}, which is not available here")
    return _substitute(template, values)


def _substitute(template: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        return "$" if name is None else values[name]

    return _PLACEHOLDER.sub(replace, template)
