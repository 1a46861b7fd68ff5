"""Pydantic models of Climatik's custom resources, CRD generation and status helpers.

The models are the single source of the CRD YAML in `crd/`.
"""
