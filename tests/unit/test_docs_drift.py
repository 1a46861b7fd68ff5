"""The README, the docs and the examples name the same namespaces and configs (issue 20, item 3).

A newcomer copies the commands: `kubectl apply -n serving` beside an example whose KEDA query
hard-codes `namespace="llm"` gives a ScaledObject that never scales and a config that measures
nothing. Each example says in its header how it is applied; every command in README.md and
docs/*.md that applies an example, explains a config or reads one with kubectl must use that
namespace and a config name the examples define, and the example's own queries must not name
another namespace.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_HEADER = re.compile(r"^#\s+kubectl apply -n (\S+) -f (examples/\S+\.yaml)\s*$", re.MULTILINE)
_QUERY_NAMESPACE = re.compile(r'\b(?:exported_|pod_|container_)?namespace="([^"$]+)"')
_COMMAND = re.compile(r"\b(?:kubectl|climatik)\s[^`#|\n]*")
PCC_KINDS = {"pcc", "powercappingconfig", "powercappingconfigs"}
_FLAGS_WITH_VALUES = {"-n", "--namespace", "-f", "--filename", "-o", "--kubeconfig", "-l"}


@dataclass(frozen=True)
class Example:
    path: str
    namespace: str
    configs: frozenset[str]
    query_namespaces: frozenset[str]
    object_namespaces: frozenset[str]


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def load_example(path: Path) -> Example:
    text = path.read_text()
    header = _HEADER.search(text)
    assert header, f"{path.name}: no '#   kubectl apply -n NS -f examples/...' header"
    assert header[2] == f"examples/{path.name}", f"{path.name}: its header applies {header[2]}"
    documents = [d for d in yaml.safe_load_all(text) if d]
    return Example(
        path=f"examples/{path.name}",
        namespace=header[1],
        configs=frozenset(
            d["metadata"]["name"] for d in documents if d.get("kind") == "PowerCappingConfig"
        ),
        query_namespaces=frozenset(
            m for d in documents for s in _strings(d) for m in _QUERY_NAMESPACE.findall(s)
        ),
        object_namespaces=frozenset(
            d["metadata"]["namespace"] for d in documents if "namespace" in d["metadata"]
        ),
    )


@dataclass(frozen=True)
class Command:
    where: str
    words: tuple[str, ...]

    @property
    def namespace(self) -> str | None:
        for i, word in enumerate(self.words):
            if word in {"-n", "--namespace"} and i + 1 < len(self.words):
                return self.words[i + 1]
            if word.startswith("--namespace="):
                return word.split("=", 1)[1]
        return None

    @property
    def positional(self) -> list[str]:
        """The words that are not flags or flag values."""
        found, skip = [], False
        for word in self.words:
            if skip:
                skip = False
            elif word in _FLAGS_WITH_VALUES:
                skip = True
            elif not word.startswith("-"):
                found.append(word)
        return found

    def after(self, *prefix: str) -> list[str]:
        """The positional words after `prefix` (itself positional words)."""
        words = self.positional
        for i in range(len(words) - len(prefix) + 1):
            if tuple(words[i : i + len(prefix)]) == prefix:
                return words[i + len(prefix) :]
        return []

    def files(self) -> list[str]:
        return [
            self.words[i + 1] for i, w in enumerate(self.words[:-1]) if w in {"-f", "--filename"}
        ]


def commands(path: Path) -> list[Command]:
    """Every kubectl or climatik command in a Markdown file (code blocks and inline code)."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for match in _COMMAND.finditer(line):
            try:
                words = shlex.split(match[0])
            except ValueError:
                words = match[0].split()
            found.append(Command(f"{path.relative_to(ROOT)}:{number}", tuple(words)))
    return found


ALL_EXAMPLES = [load_example(p) for p in EXAMPLES]
BY_PATH = {e.path: e for e in ALL_EXAMPLES}
CONFIG_NAMESPACES = {name: e.namespace for e in ALL_EXAMPLES for name in e.configs}
ALL_COMMANDS = [c for doc in DOCS for c in commands(doc)]


@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=lambda e: e.path)
def test_an_example_names_only_the_namespace_it_is_applied_to(example: Example) -> None:
    assert example.query_namespaces <= {example.namespace}, example.query_namespaces
    assert example.object_namespaces <= {example.namespace}, example.object_namespaces


def test_commands_that_apply_an_example_use_its_namespace() -> None:
    applied = [
        (c, path)
        for c in ALL_COMMANDS
        if "apply" in c.words
        for path in c.files()
        if path.startswith("examples/")
    ]
    assert any(c.where.startswith("README.md") for c, _ in applied), "README applies no example"
    wrong = [
        f"{c.where}: {' '.join(c.words)} (the example says -n {BY_PATH[path].namespace})"
        if path in BY_PATH
        else f"{c.where}: {path} does not exist"
        for c, path in applied
        if path not in BY_PATH or c.namespace != BY_PATH[path].namespace
    ]
    assert not wrong, wrong


def _placeholder(word: str | None) -> bool:
    return word is not None and word.isupper()


def _config_commands() -> list[tuple[Command, str]]:
    """(command, config name) for `climatik explain NAME -n NS` and `kubectl -n NS get|describe
    pcc NAME`. Commands without a namespace (the current one) and placeholders (`NAME`, `NS`)
    are generic, not about the examples."""
    found = []
    for c in ALL_COMMANDS:
        if c.namespace is None or _placeholder(c.namespace):
            continue
        names = c.after("climatik", "explain")
        for verb in ("get", "describe"):
            kind_and_names = c.after("kubectl", verb)
            if kind_and_names[:1] and kind_and_names[0] in PCC_KINDS:
                names += kind_and_names[1:]
        found += [(c, name) for name in names if not _placeholder(name)]
    return found


def test_commands_that_name_a_config_use_an_example_config_in_its_namespace() -> None:
    named = _config_commands()
    assert any(c.where.startswith("README.md") for c, _ in named), "README explains no config"
    wrong = [
        f"{c.where}: {' '.join(c.words)} (the examples define "
        f"{CONFIG_NAMESPACES.get(name, 'no such config')!s} / {name})"
        for c, name in named
        if name not in CONFIG_NAMESPACES or c.namespace != CONFIG_NAMESPACES[name]
    ]
    assert not wrong, wrong


def test_the_drift_checks_see_the_drift_they_exist_for() -> None:
    """The parsers find what the README of issue 20 got wrong (a check that cannot fail is no
    check)."""
    drifted = Command(
        "x", tuple(shlex.split("kubectl apply -n serving -f examples/vllm-keda.yaml"))
    )
    assert drifted.namespace == "serving"
    assert drifted.files() == ["examples/vllm-keda.yaml"]
    explain = Command("x", tuple(shlex.split("climatik explain other-cap -n serving")))
    assert explain.after("climatik", "explain") == ["other-cap"]
    get = Command("x", tuple(shlex.split("kubectl -n llm get pcc vllm-power-cap -o yaml")))
    assert get.after("kubectl", "get") == ["pcc", "vllm-power-cap"]
    assert _QUERY_NAMESPACE.findall('sum(x{namespace="llm", exported_namespace="b"})') == [
        "llm",
        "b",
    ]
