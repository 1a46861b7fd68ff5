"""Resource names live in one place: `climatik.kube.resources` for Kubernetes' and third-party
kinds, the API's own names for the PowerCappingConfig. What the controller lists, watches and
writes must name the same group, version, plural and kind as the CRDs the API server serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from climatik.kube import resources
from climatik.kube.resources import PODS, Resource
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS

ROOT = Path(__file__).resolve().parents[2]
ALL = [value for value in vars(resources).values() if isinstance(value, Resource)] + [
    POWER_CAPPING_CONFIGS
]


def test_the_config_resource_is_the_committed_crd() -> None:
    crd = yaml.safe_load(
        (ROOT / "crd/powercapping.climatik-project.ai_powercappingconfigs.yaml").read_text()
    )
    spec = crd["spec"]
    served = [v["name"] for v in spec["versions"] if v["served"]]
    assert POWER_CAPPING_CONFIGS.group == spec["group"]
    assert POWER_CAPPING_CONFIGS.version in served
    assert POWER_CAPPING_CONFIGS.plural == spec["names"]["plural"]
    assert POWER_CAPPING_CONFIGS.kind == spec["names"]["kind"]
    assert POWER_CAPPING_CONFIGS.namespaced is (spec["scope"] == "Namespaced")


@pytest.mark.parametrize("resource", ALL, ids=lambda r: r.plural)
def test_every_resource_names_its_kind_and_the_plural_follows_it(resource: Resource) -> None:
    assert resource.kind, f"{resource.plural}: bodies written for it need its kind"
    # Kubernetes' own rule for these regular nouns: lower-case kind plus "s".
    assert resource.plural == resource.kind.lower() + "s"


def test_the_kind_is_not_part_of_an_informer_key() -> None:
    named_without_kind = Resource("", "v1", "pods")
    assert named_without_kind == PODS
    assert hash(named_without_kind) == hash(PODS)


def test_no_module_names_a_resource_of_its_own() -> None:
    # A second definition is how group, version or plural drift apart (issue 21).
    literal = re.compile(r"\b(?:Resource|custom)\(\s*[\"']")
    elsewhere = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "climatik").rglob("*.py"))
        if path != ROOT / "climatik/kube/resources.py" and literal.search(path.read_text())
    ]
    assert elsewhere == []
