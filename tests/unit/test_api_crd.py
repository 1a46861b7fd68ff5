"""The committed CRD is the generator's output, and the generator's output is a sound CRD.

"Sound" means what the API server demands of a structural schema plus what we demand for CEL
cost (every string and list bounded), and that every CEL rule, list-map key and printer column
points at a field that exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from climatik.api.crd import CRD_FILE, SchemaError, build_crd, check_structural, render_crd_yaml
from climatik.cli import main
from tests.api_cases import INVALID_CASES

REPO_ROOT = Path(__file__).resolve().parents[2]


def _root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _nodes(node["items"], f"{path}[]")
    return found


def _resolve(node: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = node
    for part in dotted.strip(".").split("."):
        found = found.get("properties", {}).get(part) if found is not None else None
    return found


def test_committed_crd_is_up_to_date() -> None:
    committed = (REPO_ROOT / CRD_FILE).read_text(encoding="utf-8")
    assert committed == render_crd_yaml(), (
        f"{CRD_FILE} is stale: run `climatik crd -o {CRD_FILE}` and commit the result"
    )


def test_crd_subcommand_prints_the_generated_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == render_crd_yaml()


def test_crd_subcommand_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "crd.yaml"
    completed = subprocess.run(
        [sys.executable, "-m", "climatik", "crd", "-o", str(target)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert completed.stdout == ""
    assert target.read_text(encoding="utf-8") == render_crd_yaml()


def test_crd_identity() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "powercappingconfigs.powercapping.climatik-project.ai"
    spec = crd["spec"]
    assert spec["group"] == "powercapping.climatik-project.ai"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "PowerCappingConfig"
    assert spec["names"]["plural"] == "powercappingconfigs"
    assert spec["names"]["shortNames"] == ["pcc"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}


def test_yaml_parses_back_to_the_same_object() -> None:
    text = render_crd_yaml()
    assert yaml.safe_load(text) == build_crd()


def test_schema_is_structural_and_bounded() -> None:
    root = _root_schema()
    check_structural(root["properties"]["spec"], ".spec")
    check_structural(root["properties"]["status"], ".status")
    for path, node in _nodes(root):
        assert "type" in node, path
        assert not {"$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs"} & node.keys(), (
            path
        )
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path
            assert "minimum" in node, path
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), path
            assert "properties" not in node, path


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, "string without maxLength"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
            },
            "array without maxItems",
        ),
        ({"type": "object", "properties": {"a": {"maxLength": 3}}}, "no type"),
        (
            {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}},
            "non-structural",
        ),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            "map without maxProperties",
        ),
        (
            {
                "type": "array",
                "maxItems": 2,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["id"],
                "items": {"type": "object", "properties": {"id": {"type": "integer"}}},
            },
            "list-map keys",
        ),
    ],
)
def test_check_structural_catches(bad: dict[str, Any], complaint: str) -> None:
    with pytest.raises(SchemaError, match=complaint):
        check_structural(bad)


def test_every_cel_rule_names_an_existing_field_in_its_message() -> None:
    rules_seen = 0
    for path, node in _nodes(_root_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            rules_seen += 1
            assert rule["message"], path
            # A rule on a scalar field has no fieldPath: it names the field it sits on.
            field_path = rule.get("fieldPath", "")
            if field_path:
                assert _resolve(node, field_path) is not None, (path, field_path)
            leaf = (field_path or path).rsplit(".", 1)[-1]
            assert leaf in rule["message"], (path, rule)
            # Only fields the schema declares may appear after `self.`.
            for name in re.findall(r"self\.([A-Za-z]+)", rule["rule"]):
                assert name in node.get("properties", {}), (path, name)
    assert rules_seen >= 18


def test_list_maps_and_bounds_on_design_fields() -> None:
    spec = _root_schema()["properties"]["spec"]
    racks = spec["properties"]["rackConstraints"]
    assert racks["x-kubernetes-list-type"] == "map"
    assert racks["x-kubernetes-list-map-keys"] == ["rackId"]
    assert spec["required"] == ["powerCapLimit"]
    cap = spec["properties"]["powerCapLimit"]
    assert cap["minimum"] == 0
    assert cap["exclusiveMinimum"] is True
    assert cap["maximum"] > 0
    url = spec["properties"]["metrics"]["items"]["properties"]["prometheusAddress"]["pattern"]
    assert re.match(url, "https://prometheus:9090/api")
    assert not re.match(url, "ftp://prometheus")
    secret = spec["properties"]["carbon"]["properties"]["apiKeySecretRef"]["properties"]
    assert set(secret) == {"name", "key"}, "a secret reference must not name another namespace"


def test_printer_columns_point_at_schema_fields() -> None:
    (version,) = build_crd()["spec"]["versions"]
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert {"Cap", "Power", "State", "Age"} <= columns.keys()
    root = _root_schema()
    for name, column in columns.items():
        json_path = column["jsonPath"].split("[", 1)[0]
        if json_path == ".metadata.creationTimestamp":
            continue
        assert _resolve(root, json_path) is not None, name
    assert "Capping" in columns["State"]["jsonPath"]


def test_every_cel_rule_is_exercised_by_an_invalid_case() -> None:
    """Each rule's field is the named field of at least one object the tests expect refused."""
    case_fields = {re.sub(r"\[\d+\]", "", case.field) for case in INVALID_CASES}
    for path, node in _nodes(_root_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            rule_field = (path + rule.get("fieldPath", "")).replace("[]", "").lstrip(".")
            assert rule_field in case_fields, (rule_field, rule["rule"])
