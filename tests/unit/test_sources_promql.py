"""PromQL escaping and templates: values from users and the cluster can never break out of a
label matcher, and regex alternations match exactly the names given."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.sources import promql
from climatik.sources.promql import QueryTemplateError


def go_unquote_content(escaped: str) -> str:
    """Decode the escapes `escape_string_content` emits, as PromQL's lexer does."""
    return re.sub(
        r"\\(\\|x[0-9a-f]{2})",
        lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)),
        escaped,
    )


@given(st.text())
def test_escaped_string_round_trips_and_contains_no_quote(value: str) -> None:
    escaped = promql.escape_string_content(value)
    assert not set(escaped) & set("\"'`\n\r")
    assert go_unquote_content(escaped) == value


def test_quote_string_examples() -> None:
    assert promql.quote_string("ns") == '"ns"'
    assert promql.quote_string('a"}) or vector(1e9) #') == '"a\\x22}) or vector(1e9) #"'
    assert promql.quote_string("back\\slash") == '"back\\\\slash"'


names = st.text(alphabet="abz019.-_+*?()|[]{}^$\\", min_size=1, max_size=12)


@given(st.lists(names, min_size=1, max_size=6), names)
def test_regex_alternation_matches_exactly_the_names(members: list[str], other: str) -> None:
    pattern = promql.regex_alternation(members)
    for member in members:
        assert re.fullmatch(pattern, member)
    assert bool(re.fullmatch(pattern, other)) == (other in members)


def test_regex_alternation_is_sorted_and_escaped() -> None:
    assert promql.regex_alternation(["vllm-b", "vllm.a", "vllm-b"]) == "vllm-b|vllm\\.a"


def test_regex_alternation_refuses_empty_sets() -> None:
    # label=~"" would match every series WITHOUT the label: never build it.
    with pytest.raises(QueryTemplateError):
        promql.regex_alternation([])
    with pytest.raises(QueryTemplateError):
        promql.regex_alternation(["a", ""])


def test_regex_matcher_is_a_doubly_escaped_string() -> None:
    assert promql.regex_matcher("pod", ["a.b"]) == 'pod=~"a\\\\.b"'


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", 'a"', "a b"])
def test_label_names_are_validated(bad: str) -> None:
    with pytest.raises(QueryTemplateError):
        promql.check_label_name(bad)


def test_metric_names_allow_colons() -> None:
    assert promql.check_metric_name("vllm:generation_tokens_total")
    with pytest.raises(QueryTemplateError):
        promql.check_metric_name("vllm-generation")


@pytest.mark.parametrize("good", ["1m", "30s", "1m30s", "500ms", "2h"])
def test_durations_accepted(good: str) -> None:
    assert promql.check_duration(good) == good


@pytest.mark.parametrize("bad", ["", "1", "m", "1 m", "1m]", "5x"])
def test_durations_refused(bad: str) -> None:
    with pytest.raises(QueryTemplateError):
        promql.check_duration(bad)


def test_render_template_expands_and_escapes() -> None:
    query = 'sum(my_watts{ns="$namespace",pod=~"${pods}"}) * $$'
    rendered = promql.render_template(query, namespace='x"y', pods=["a.1", "b"])
    assert rendered == 'sum(my_watts{ns="x\\x22y",pod=~"a\\\\.1|b"}) * $'


def test_render_template_leaves_regex_group_references_alone() -> None:
    # label_replace uses $1: a digit is not a placeholder name.
    query = 'label_replace(up, "rack", "$1", "instance", "(.*):.*")'
    assert promql.render_template(query) == query


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(QueryTemplateError, match=r"\$pod\b"):
        promql.template_placeholders('up{pod=~"$pod"}')


def test_placeholder_without_value_is_an_error() -> None:
    with pytest.raises(QueryTemplateError, match=r"\$rack"):
        promql.render_template('rack_watts{rack="$rack"}', namespace="ns", pods=["a"])


def test_template_placeholders_lists_used_names() -> None:
    used = promql.template_placeholders('x{a="$rack",b=~"${nodes}",c="$$namespace"}')
    assert used == {"rack", "nodes"}
