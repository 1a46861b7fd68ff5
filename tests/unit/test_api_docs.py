"""docs/api.md documents every field and its examples are valid objects.

The examples are also applied to the real API server by the integration tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from climatik.api.convert import parse_object
from climatik.api.crd import build_crd
from tests.api_cases import DOCS_API, docs_examples

EXAMPLES = docs_examples()


def _field_paths(node: dict[str, Any], prefix: str) -> list[str]:
    """Paths of every list and every leaf field (objects are documented through their fields)."""
    paths = []
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        if child.get("type") == "array" and "properties" not in child["items"]:
            paths.append(path)
        elif child.get("type") == "array":
            paths.append(f"{path}[]")
            paths += _field_paths(child["items"], f"{path}[]")
        elif "properties" in child:
            paths += _field_paths(child, path)
        else:
            paths.append(path)
    return paths


def test_docs_have_an_example_per_feature() -> None:
    assert len(EXAMPLES) >= 10
    features = {"policy", "targetSelector", "powerMeasurement", "carbon", "placement"}
    features |= {"cooling", "gpuTuning", "failSafe", "rackConstraints", "metrics"}
    for feature in features:
        assert any(feature in example["spec"] for example in EXAMPLES), feature


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_docs_example_is_valid(index: int) -> None:
    parse_object(EXAMPLES[index])


def test_docs_mention_every_field() -> None:
    text = DOCS_API.read_text(encoding="utf-8")
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    missing = []
    for root in ("spec", "status"):
        for path in _field_paths(schema[root], ""):
            documented = f"`{path}`" in text or f"`{root}.{path}`" in text
            leaf = path.rsplit(".", 1)[-1].removesuffix("[]")
            # Status list items are documented together in one row by their leaf names.
            if not documented and not (root == "status" and f"`{leaf}`" in text):
                missing.append(f"{root}.{path}")
    assert not missing, f"undocumented fields: {missing}"
