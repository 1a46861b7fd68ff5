"""A placement admission webhook as the integration tests serve it: the Helm chart's
MutatingWebhookConfiguration, scoped to one namespace (its serving pair comes from
`tests/certificates.py`)."""

from __future__ import annotations

import base64
from typing import Any

from climatik.reconcilers.placement_webhook import MANAGED_LABEL


def webhook_configuration(name: str, namespace: str, url: str, ca: bytes) -> dict[str, Any]:
    """The MutatingWebhookConfiguration the Helm chart installs, scoped to one namespace."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "pods.placement.climatik-project.ai",
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca).decode()},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {"matchLabels": {MANAGED_LABEL: "true"}},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
                "reinvocationPolicy": "Never",
            }
        ],
    }
